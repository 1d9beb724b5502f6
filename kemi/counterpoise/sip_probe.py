"""One SIP OPTIONS to a balancer, to learn whether it answers: how a start-up waits for
Kamailio, and keepalived's health check (every second on each node of a pair) asks it.

Light on purpose: only what one probe needs is imported, and TLS only when probing TLS."""

from __future__ import annotations

import functools
import ipaddress
import os
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ssl


def sip_options(
    host: str,
    port: int,
    timeout_s: float = 0.5,
    uri: str | None = None,
    proto: str = "udp",
) -> int | None:
    """Send one OPTIONS over ``proto`` (udp, tcp or tls, the certificate unchecked) to
    ``host`` (IPv6 bare or in brackets) and return the status code of the reply, or None."""
    address = host.strip("[]")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    try:
        with socket.socket(family, kind) as sock:
            sock.settimeout(timeout_s)
            if proto == "udp" and _is_loopback(address):
                sock.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
            else:  # the route picks the source address (another namespace's node)
                sock.connect((address, port))
            local_host, local_port = sock.getsockname()[:2]
            local = f"[{local_host}]" if family == socket.AF_INET6 else local_host
            remote = f"[{address}]" if family == socket.AF_INET6 else address
            target = uri or f"sip:{remote}:{port}"
            request = _options_request(target, proto, local, local_port)
            if proto == "tls":
                with _unchecked_tls().wrap_socket(sock) as tls:
                    tls.sendall(request)
                    data = tls.recv(65535)
            elif proto == "tcp":
                sock.sendall(request)
                data = sock.recv(65535)
            else:
                sock.sendto(request, (address, port))
                data = sock.recv(65535)
    except OSError:
        return None
    try:
        return int(data.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:  # a host name: resolved by the system, most often to loopback here
        return True


@functools.cache
def _unchecked_tls() -> ssl.SSLContext:
    """A start-up check asks whether the balancer answers, not whether its certificate is
    trusted (a test's self-signed one is not). Made on first use: importing ``ssl`` and
    loading the system's certificates costs more than a UDP probe itself."""
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _options_request(target: str, proto: str, local_host: str, local_port: int) -> bytes:
    tag = os.urandom(6).hex()
    return (
        f"OPTIONS {target} SIP/2.0\r\n"
        f"Via: SIP/2.0/{proto.upper()} {local_host}:{local_port};branch=z9hG4bK{tag}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:check@{local_host}>;tag={tag}\r\n"
        f"To: <{target}>\r\n"
        f"Call-ID: {tag}@{local_host}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
