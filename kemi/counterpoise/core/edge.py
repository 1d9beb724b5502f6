"""The edge's trust rules: who may make the balancer send what where, and how much.

Pure: the Kamailio edge reads the source address, the next hop and the counters, and asks
these functions what they mean (docs/security.md).

The trust model in one sentence: the pool's proxies are trusted, everything else is not. An
initial request from outside goes only to the pool proxy the balancer picks; an in-dialog
request only where the seal of the balancer's own Record-Route says (``dialog_seal``): to
its dialog's proxy, or, from that proxy, back to the dialog's caller.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Iterable

Address = tuple[str, int]
"""(host, port) of a SIP hop: an IP address as Kamailio prints ``$si`` (IPv6 without
brackets), or a lower-case host name."""

DEFAULT_PORTS = {"sip": 5060, "sips": 5061}

_URI = re.compile(
    r"^(?P<scheme>sips?):(?:[^@;?>]*@)?(?P<host>\[[^\]]+\]|[^:;?>]+)(?::(?P<port>\d{1,5}))?",
    re.IGNORECASE,
)


HOPS_MEMO = 4096
"""Hops a process remembers the normal form of: every message reads its source, and the
sources a node sees recur (its upstreams, the pool); a flood of new ones only refills it."""


@functools.lru_cache(maxsize=HOPS_MEMO)
def hop(host: str, port: int | str | None, scheme: str = "sip") -> Address:
    """One hop's address, normalised: brackets off an IPv6 address, lower case, the scheme's
    default port when there is none."""
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    number = int(port) if port not in (None, "", 0, "0") else DEFAULT_PORTS[scheme.lower()]
    return host, number


def uri_hop(uri: str) -> Address | None:
    """Where a SIP URI sends a request (its host and port), or None when it is no SIP URI."""
    match = _URI.match(uri.strip())
    if not match:
        return None
    return hop(match.group("host"), match.group("port"), match.group("scheme"))


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def pool_hops(
    uris: Iterable[str], resolve: Callable[[str], Iterable[str]]
) -> dict[str, frozenset[Address]]:
    """Every address each pool proxy may be seen at: its URI's host and port, and, for a host
    name, the addresses ``resolve`` gives for it (done once per pool version, never per
    request). A URI that does not parse has none."""
    hops: dict[str, frozenset[Address]] = {}
    for uri in uris:
        named = uri_hop(uri)
        if named is None:
            hops[uri] = frozenset()
            continue
        host, port = named
        resolved = () if is_ip(host) else resolve(host)
        hops[uri] = frozenset({named, *((hop(ip, port)[0], port) for ip in resolved)})
    return hops


def from_pool(source: Address, stream: bool, pool: frozenset[Address]) -> bool:
    """Whether a message comes from a pool proxy: from its address and port or, over a
    connection (``stream``: TCP, TLS), from its address alone, since a proxy opens its
    connections from ephemeral ports (over UDP it sends from its listening socket)."""
    return source in pool or (stream and any(source[0] == host for host, _ in pool))


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """The addresses and CIDR networks of a comma-separated list (``10.0.0.0/24,192.0.2.7,
    2001:db8::/32``; an address is a network of one). ``ValueError`` names the first item
    that is neither, or a network with host bits set (``10.0.0.5/24``: a typo for a host or
    for ``10.0.0.0/24``, either way not what was meant)."""
    networks = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item.removeprefix("[").removesuffix("]")))
        except ValueError as error:
            raise ValueError(f"{item!r}: {error}") from None
    return tuple(networks)


def recordable(value: str, max_chars: int) -> bool:
    """Whether a value read from a message may go into a record (shared memory, Redis):
    present and no longer than ``max_chars``; a longer one is routed but never recorded."""
    return 0 < len(value) <= max_chars
