"""The balancer's SIP sockets as an operator writes them: Kamailio's ``proto:host:port``.

``udp:10.0.0.2:5060``, ``tcp:[2001:db8::2]:5060``, ``tls:10.0.0.2:5061``; a bare
``host:port`` is UDP (the form ``--listen`` took before it knew other transports). The
advertised address (``--advertise HOST[:PORT]``) is what the balancer writes in Via and
Record-Route instead of the socket's own, for a node behind NAT.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re

PROTOCOLS = ("udp", "tcp", "tls")
"""Transports the balancer listens on (Kamailio's sctp and ws are not wired up)."""

_SOCKET = re.compile(
    r"^(?:(?P<proto>[A-Za-z]+):)?(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\[\]]+):(?P<port>\d{1,5})$"
)
_ADVERTISED = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\[\]/]+)(?::(?P<port>\d{1,5}))?$")


class InvalidSocket(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class ListenSocket:
    proto: str
    host: str
    """An IPv6 address is kept in brackets, as SIP and Kamailio write it."""
    port: int

    @property
    def is_ipv6(self) -> bool:
        return self.host.startswith("[")

    @property
    def address(self) -> str:
        """The host as the socket API takes it (no brackets)."""
        return self.host.strip("[]")

    def kamailio(self, advertise: str = "") -> str:
        """The ``-l`` argument of Kamailio, with ``/advertised:port`` when given."""
        text = f"{self.proto}:{self.host}:{self.port}"
        if advertise:
            host, port = parse_advertise(advertise)
            text += f"/{host}:{port or self.port}"
        return text

    def uri(self, user: str = "") -> str:
        """A SIP URI reaching this socket (``;transport=`` for TCP and TLS)."""
        at = f"{user}@" if user else ""
        transport = "" if self.proto == "udp" else f";transport={self.proto}"
        return f"sip:{at}{self.host}:{self.port}{transport}"

    def __str__(self) -> str:
        return f"{self.proto}:{self.host}:{self.port}"


def parse_socket(text: str) -> ListenSocket:
    match = _SOCKET.match(text.strip())
    if not match:
        raise InvalidSocket(
            f"{text!r}: expected [PROTO:]HOST:PORT, e.g. udp:127.0.0.1:5060, tcp:[::1]:5060"
        )
    proto = (match.group("proto") or "udp").lower()
    if proto not in PROTOCOLS:
        raise InvalidSocket(f"{text!r}: transport {proto!r} is not one of {', '.join(PROTOCOLS)}")
    return ListenSocket(proto, _host(text, match.group("host")), _port(text, match.group("port")))


def parse_sockets(text: str) -> tuple[ListenSocket, ...]:
    """A comma-separated list of sockets (the ``listen`` setting), at least one, no twins."""
    sockets = tuple(parse_socket(part) for part in text.split(",") if part.strip())
    if not sockets:
        raise InvalidSocket("no socket given")
    if len(set(sockets)) != len(sockets):
        raise InvalidSocket(f"{text!r}: a socket is listed twice")
    return sockets


def parse_advertise(text: str) -> tuple[str, int | None]:
    """``HOST[:PORT]`` of the advertised address; the port defaults to each socket's own."""
    match = _ADVERTISED.match(text.strip())
    if not match:
        raise InvalidSocket(f"{text!r}: expected HOST[:PORT], e.g. 203.0.113.5 or [2001:db8::5]")
    port = match.group("port")
    return _host(text, match.group("host")), _port(text, port) if port else None


def _host(text: str, host: str) -> str:
    bare = host.strip("[]")
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        if host.startswith("["):
            raise InvalidSocket(f"{text!r}: {host} is not an IPv6 address") from None
        return host.lower()
    if address.version == 6:
        return f"[{address.compressed}]"
    return address.compressed


def _port(text: str, port: str) -> int:
    if not 1 <= int(port) <= 65535:
        raise InvalidSocket(f"{text!r}: port {port} is out of range 1-65535")
    return int(port)
