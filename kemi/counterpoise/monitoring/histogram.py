"""A fixed-bucket histogram that SIP workers keep per process and the timer process sums.

Each worker is the only writer of its own histogram (one htable key per worker, as the
tallies), so no lock is taken; the timer process adds them up for a scrape.
"""

from __future__ import annotations

import bisect
import dataclasses

ROUTE_BUCKETS_S = (0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05)
"""Upper bounds of the route-time buckets: the Python route of an initial request takes
about 100-300 us on an idle core (a few KSR calls), a Redis lookup of the location server
adds up to ``location_redis_timeout_ms`` (30 ms); 50 us to 50 ms covers both."""


@dataclasses.dataclass
class Histogram:
    counts: list[int] = dataclasses.field(default_factory=lambda: [0] * len(ROUTE_BUCKETS_S))
    """Observations per bucket (not cumulative); the last bucket's overflow is in ``count``."""
    count: int = 0
    sum_us: int = 0

    def observe_ns(self, elapsed_ns: int) -> None:
        index = bisect.bisect_left(ROUTE_BUCKETS_S, elapsed_ns / 1e9)
        if index < len(self.counts):
            self.counts[index] += 1
        self.count += 1
        self.sum_us += elapsed_ns // 1000

    def add(self, other: Histogram) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.count += other.count
        self.sum_us += other.sum_us

    def cumulative(self) -> list[tuple[str, int]]:
        """Prometheus buckets: ``(le, observations <= le)``, ending with ``+Inf``."""
        buckets, running = [], 0
        for bound, count in zip(ROUTE_BUCKETS_S, self.counts, strict=True):
            running += count
            buckets.append((repr(bound), running))
        return [*buckets, ("+Inf", self.count)]

    def encode(self) -> str:
        return " ".join(str(n) for n in (self.count, self.sum_us, *self.counts))

    @classmethod
    def decode(cls, text: str) -> Histogram:
        values = [int(part) for part in text.split()]
        if len(values) != 2 + len(ROUTE_BUCKETS_S) or min(values) < 0:
            raise ValueError(f"not a histogram: {text!r}")
        return cls(counts=values[2:], count=values[0], sum_us=values[1])
