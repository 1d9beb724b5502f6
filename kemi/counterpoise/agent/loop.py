"""``counterpoise-agent``: runs next to one SIP proxy and publishes its load to Redis.

Every ``--interval-ms`` it measures the proxy's processes with psutil (CPU used over the
interval, resident memory, how many there are), asks the proxy itself through a ``Source``
(Kamailio: ``tm.stats`` over JSON-RPC; anything else: a shell command printing a number) and
writes a ``reports.LoadReport``:

``<prefix>report:<proxy uri>``   STRING  ``reports.encode(report)`` (msgpack), ``PX --ttl-ms``:
                                         the report of an agent that stopped disappears.
``<prefix>reports``              channel ``PUBLISH``-ed the proxy URI after each write.

It never stops on its own: a proxy it cannot query gives a report with ``error`` set, and
with Redis down it goes on measuring, says so once per outage and resumes writing when Redis
answers again (``Backoff`` spaces the attempts). SIGTERM or Ctrl-C end it with status 0.

``Agent.tick(now_ms)`` is one interval's work, with the clocks injected, so tests drive it
without sleeping; ``main`` only parses options and loops.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from counterpoise import clock
from counterpoise.agent.sources import Source, SourceError, SourceSample
from counterpoise.agent.usage import CpuMeter, ProcessSet, ProcStat
from counterpoise.core import reports
from counterpoise.core.backoff import Backoff, Guarded
from counterpoise.core.reports import LoadReport
from counterpoise.core.settings import Settings
from counterpoise.store.client import ERRORS
from counterpoise.store.pool import PoolStore

log = logging.getLogger("counterpoise.agent")


DEFAULT_INTERVAL_MS = 1000
"""One report per second: the balancer's own sync tick publishes at the same pace, and a
report costs one SET and one PUBLISH, nothing for Redis."""


DEFAULT_TTL_MS = 3000
"""Expiry of a report: three intervals, so one late or lost write does not make a live proxy's
report vanish, while a dead agent's report is gone within 3 s."""


class Agent:
    def __init__(
        self,
        proxy: str,
        store: PoolStore,
        processes: ProcessSet,
        source: Source | None = None,
        capacity: float | None = None,
        ttl_ms: int = DEFAULT_TTL_MS,
        backoff: Backoff | None = None,
        monotonic: Callable[[], float] = clock.monotonic_s,
    ) -> None:
        self.proxy = proxy
        self.store = store
        self.processes = processes
        self.source = source
        self.capacity = capacity
        self.ttl_ms = ttl_ms
        self.key = self.store.keys.report(proxy)
        self.redis = Guarded(
            backoff or Backoff.from_settings(Settings()),
            ERRORS,
            log.warning,
            "Redis",
            "measuring on, will retry",
        )
        self.monotonic = monotonic
        self.cpu = CpuMeter()
        self.seq: int | None = None
        """The last report's sequence number; the first is the start time in epoch ms, so
        a restarted agent's reports are still newer than its previous run's."""
        self.published = 0
        """Reports written to Redis so far."""
        self.published_ms: int | None = None
        """Epoch ms of the latest report written to Redis (None before the first)."""
        self.last_report: LoadReport | None = None
        """The latest report measured, written or not."""

    def measure(self, now_ms: int) -> LoadReport:
        errors = []
        stats: list[ProcStat] = []
        try:
            stats = self.processes.find()
        except SourceError as error:
            errors.append(str(error))
        percent, cores = self.cpu.measure(stats, self.monotonic())
        if not stats:
            percent = None
        sample = SourceSample()
        if self.source is not None:
            try:
                sample = self.source.sample()
            except Exception as error:  # any failure of the proxy's side is reported, not fatal
                errors.append(str(error) or type(error).__name__)
        self.seq = now_ms if self.seq is None else self.seq + 1
        report = LoadReport(
            proxy=self.proxy,
            seq=self.seq,
            timestamp_ms=now_ms,
            cpu_utilisation=None if percent is None else min(1.0, percent / 100 / cores),
            cpu_percent=percent,
            transactions=sample.transactions,
            calls=sample.calls,
            capacity=self.capacity,
            processes=len(stats),
            rss_bytes=sum(s.rss_bytes for s in stats),
            error="; ".join(errors) or None,
        )
        return report

    def publish(self, report: LoadReport, now_ms: int) -> bool:
        """Write ``report``; False (and no exception) when Redis is down or backing off."""

        def write() -> None:
            self.store.put_report(self.proxy, reports.encode(report), self.ttl_ms)

        self.last_report = report
        if not self.redis.call(now_ms, write):
            return False
        self.published += 1
        self.published_ms = now_ms
        return True

    @property
    def redis_down(self) -> bool:
        """True from a failed write until the next successful one."""
        return self.redis.down

    def tick(self, now_ms: int) -> LoadReport:
        """Measure and publish once; never raises for a dead proxy or a dead Redis."""
        report = self.measure(now_ms)
        self.publish(report, now_ms)
        return report


def run_loop(
    agent: Agent,
    interval_ms: int,
    stop: threading.Event,
    wall_ms: Callable[[], int] = clock.wall_ms,
    monotonic: Callable[[], float] = clock.monotonic_s,
) -> None:
    """Tick every ``interval_ms`` (on a fixed schedule; a late tick does not shift the next
    ones, missed ones are skipped) until ``stop`` is set."""
    interval_s = interval_ms / 1000
    next_s = monotonic()
    while not stop.is_set():
        agent.tick(wall_ms())
        next_s += interval_s
        now = monotonic()
        if next_s < now:
            next_s = now
        stop.wait(next_s - now)
