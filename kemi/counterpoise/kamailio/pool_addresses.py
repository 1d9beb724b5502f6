"""Where the pool's proxies are seen, for the config's native routes: the timer process
resolves the proxies of the routing table once per change of them (``edge.pool_hops``) and
writes both tables from that one result: ``htables.PROXY_BY_ADDRESS`` (address -> proxy, read
by the reply routes) and ``htables.POOL_ADDRESSES`` (``dialog_seal.source_keys``, read by the
in-dialog route and the request route's flood exemption)."""

from __future__ import annotations

import socket
from collections.abc import Mapping

import KSR

from counterpoise.core import dialog_seal, edge
from counterpoise.kamailio import htables


def resolve(host: str) -> list[str]:
    """The addresses of a proxy named by a host name (once per pool change, not per request)."""
    try:
        return [info[4][0] for info in socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)]
    except OSError:
        return []


class PoolAddresses:
    """The one writer of both tables; it remembers what it wrote, so a change of proxies
    costs the keys that changed and an unchanged pool costs nothing."""

    def __init__(self) -> None:
        self._uris: frozenset[str] | None = None
        self._proxy_by_address: dict[str, str] = {}
        self._source_keys: frozenset[str] = frozenset()

    def publish(self, uris: frozenset[str]) -> None:
        if uris == self._uris:
            return
        self._uris = uris
        hops = edge.pool_hops(sorted(uris), resolve)
        self._write_proxy_by_address(
            {f"{host} {port}": uri for uri, hop in hops.items() for host, port in hop}
        )
        self._write_source_keys(dialog_seal.source_keys(hops))

    def _write_proxy_by_address(self, wanted: Mapping[str, str]) -> None:
        table = htables.PROXY_BY_ADDRESS.name
        for key in self._proxy_by_address.keys() - wanted.keys():
            KSR.htable.sht_rm(table, key)
        for key, uri in wanted.items():
            if self._proxy_by_address.get(key) != uri:
                KSR.htable.sht_sets(table, key, uri)
        self._proxy_by_address = dict(wanted)

    def _write_source_keys(self, wanted: frozenset[str]) -> None:
        table = htables.POOL_ADDRESSES.name
        for key in wanted - self._source_keys:
            KSR.htable.sht_seti(table, key, 1)
        for key in self._source_keys - wanted:
            KSR.htable.sht_rm(table, key)
        self._source_keys = wanted
