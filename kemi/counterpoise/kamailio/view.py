"""The node's own view of its proxies, for ``kamcmd`` (the RPC an operator has on the node).

app_python3 cannot register RPC commands (Kamailio 5.6: RPC commands are C arrays a module
registers at load time; app_python3 registers only ``app_python.reload`` and
``app_python.api_list``, and ``evrexec.run`` runs a KEMI function from RPC but returns none
of its output). So the timer process keeps, every ``publish_interval_ms`` and whether or not
Redis answers, the record it publishes of each proxy in ``htables.PROXY_VIEW``, which
htable's own RPC commands serve::

    kamcmd -s unixs:CTL htable.get cpview sip:10.0.0.11:5060   # one proxy, every input
    kamcmd -s unixs:CTL htable.dump cpview                     # every proxy, and "node"

The ``node`` key holds the node's name, Redis reachability and sync age, and panic.
"""

from __future__ import annotations

import json

import KSR

from counterpoise.core.sync import SyncLoop
from counterpoise.kamailio import htables


class NodeViewTable:
    def __init__(self) -> None:
        self._shown: set[str] = set()
        self._next_ms = 0

    def update(self, sync: SyncLoop, now_ms: int, wall_ms: int) -> None:
        if now_ms < self._next_ms:
            return
        self._next_ms = now_ms + sync.settings.redis.publish_interval_ms
        total = sum(w.weight for w in sync.weights.values())
        shown = {uri for uri in sync.pool if uri in sync.weights}
        for uri in shown:
            record = sync.record(uri, total, now_ms, wall_ms)
            KSR.htable.sht_sets(htables.PROXY_VIEW.name, uri, json.dumps(record, sort_keys=True))
        for uri in self._shown - shown:
            KSR.htable.sht_rm(htables.PROXY_VIEW.name, uri)
        self._shown = shown
        node = {
            "node": sync.node,
            "redis_ok": sync.redis_ok,
            "redis_sync_age_ms": sync.redis_sync_age_ms(now_ms),
            "panic": any(w.panic for w in sync.weights.values()),
            "proxies": sorted(shown),
            "updated_ms": wall_ms,
        }
        KSR.htable.sht_sets(
            htables.PROXY_VIEW.name, htables.VIEW_NODE, json.dumps(node, sort_keys=True)
        )
