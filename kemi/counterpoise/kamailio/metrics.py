"""The node's metrics inside Kamailio: the counters SIP workers bump, the timer's endpoint.

SIP workers count into ``htables.NODE_COUNTERS`` with ``sht_inc``: one atomic
shared-memory increment per counted event, no Python state to flush. Keys are the names in
``monitoring.node`` (``"failover <uri>"`` per proxy). ``sht_inc`` does not create a missing
key, so the timer process creates each at 0: the node's at its first tick (before it there
is no routing table, every request is answered 503 uncounted), a proxy's when it joins.
The timer process reads them, with the sync loop's state, when Prometheus scrapes its
endpoint (``monitoring.scrape``). The same place logs, at debug level, where each initial
request went and why.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

import KSR

from counterpoise import clock
from counterpoise.core.location import sum_counters
from counterpoise.core.settings import Settings
from counterpoise.core.sync import SyncLoop
from counterpoise.kamailio import htables, shared
from counterpoise.monitoring import node
from counterpoise.monitoring.histogram import Histogram
from counterpoise.monitoring.scrape import ListenError, ScrapeServer


def count(name: str) -> None:
    KSR.htable.sht_inc(htables.NODE_COUNTERS.name, name)


def routed(uri: str, by_location: bool, attempt: int) -> None:
    """An initial request relayed to ``uri`` (attempt 1 is the first try)."""
    if attempt == 1:
        count(node.ROUTED_BY_LOCATION if by_location else node.ROUTED_BY_WEIGHT)
    reason = "location record" if by_location else "weight"
    KSR.dbg(f"counterpoise: routed to {uri} by {reason}, attempt {attempt}\n")


class RouteTimer:
    """One SIP worker's histogram of the time an initial request spends in the balancer's
    choice, from ``Balancer.select``'s entry to the attempt armed
    (``counterpoise_route_seconds``): two clock reads and one shared-memory write per
    request, only with the endpoint on."""

    def __init__(self) -> None:
        self._histogram = Histogram()
        self._pid = 0

    def observe(self, started_ns: int) -> None:
        if self._pid != os.getpid():  # forked after mod_init: each worker counts its own
            self._pid, self._histogram = os.getpid(), Histogram()
        self._histogram.observe_ns(clock.perf_ns() - started_ns)
        KSR.htable.sht_sets(htables.ROUTE_TIMES.name, str(self._pid), self._histogram.encode())


def route_times() -> Histogram:
    """Every worker's route-time histogram, summed (timer process)."""
    total = Histogram()
    for _, text in shared.items(htables.ROUTE_TIMES):
        try:
            total.add(Histogram.decode(text))
        except ValueError:
            continue
    return total


def failed_over(uri: str) -> None:
    """A request that failed on ``uri`` was relayed to another proxy."""
    count(f"{node.FAILOVER} {uri}")


def _int_items(table: htables.Htable) -> dict[str, int]:
    values = {}
    for key, value in shared.items(table):
        try:
            values[key] = int(value)
        except (TypeError, ValueError):
            continue
    return values


class Endpoint:
    """The timer process's metrics: tick durations, and the scrapes it answers after each
    tick when ``settings.node.metrics_listen`` is set."""

    def __init__(self, settings: Settings, log: Callable[[str], None]) -> None:
        self.ticks = node.TickStats()
        self._created: set[str] = set()
        self._create(node.NODE_COUNTERS)
        self._server: ScrapeServer | None = None
        if settings.node.metrics_listen:
            try:
                self._server = ScrapeServer(settings.node.metrics_listen)
                log(f"Prometheus metrics on http://{settings.node.metrics_listen}/metrics")
            except ListenError as error:
                log(f"no metrics endpoint: {error}")

    def _create(self, names: Iterable[str]) -> None:
        for name in names:
            if name not in self._created:
                if KSR.htable.sht_is_null(htables.NODE_COUNTERS.name, name) > 0:
                    KSR.htable.sht_seti(htables.NODE_COUNTERS.name, name, 0)
                self._created.add(name)

    def after_tick(self, sync: SyncLoop, tick_s: float, other_redis_errors: int) -> None:
        self.ticks.add(tick_s)
        self._create(f"{node.FAILOVER} {uri}" for uri in sync.pool)
        if self._server is not None:
            self._server.poll(lambda: node.render(self._view(sync, other_redis_errors)))

    def _view(self, sync: SyncLoop, other_redis_errors: int) -> node.NodeView:
        return node.NodeView(
            sync=sync,
            now_ms=clock.monotonic_ms(),
            counters=_int_items(htables.NODE_COUNTERS),
            location_counters=sum_counters(dict(shared.items(htables.LOCATION_COUNTERS))),
            inflight={uri: shared.inflight(uri) for uri in sync.pool},
            ticks=self.ticks,
            redis_errors=sync.redis_errors + other_redis_errors,
            route_times=route_times(),
            edge_counters=shared.SharedTable().read_counters(),
        )
