"""Validation of the proxy URIs an operator enters."""

from __future__ import annotations

import ipaddress
import re

_HOST = r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)"
# The scheme is case-insensitive (RFC 3261 19.1.4): "SIP:host" is "sip:host".
_URI = re.compile(
    rf"^(?P<scheme>sips?):{_HOST}(?::(?P<port>\d{{1,5}}))?(?P<params>(?:;[A-Za-z0-9_.=-]+)*)$",
    re.IGNORECASE,
)


class InvalidProxyUri(ValueError):
    pass


def parse_proxy_uri(text: str) -> str:
    """Check that ``text`` is a SIP URI of a proxy (no user part) and return it normalised.

    ``sip:10.0.0.5:5060;transport=tcp`` is accepted; ``10.0.0.5`` or ``sip:alice@x`` are not:
    the error message says what was expected.
    """
    match = _URI.match(text.strip())
    if not match:
        raise InvalidProxyUri(
            f"{text!r} is not a proxy SIP URI (expected sip:HOST[:PORT][;params], no user part)"
        )
    port = match.group("port")
    if port is not None and not 1 <= int(port) <= 65535:
        raise InvalidProxyUri(f"{text!r}: port {port} is out of range 1-65535")
    host = match.group("host")
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise InvalidProxyUri(f"{text!r}: {host} is not an IPv6 address") from None
    scheme = match.group("scheme").lower()
    port_part = f":{port}" if port else ""
    return f"{scheme}:{host.lower()}{port_part}{match.group('params')}"
