"""The load estimate: how much more a proxy can take, from what it reports and from what it
is measured to complete.

* **Headroom** ``H = max(1 - u, load_headroom_floor)`` from the utilisation ``u`` a proxy
  reports of itself (made fresh and smoothed by ``core.load``, which this does not redo).
  The weight's load factor is ``H / H_max``, ``H_max`` the largest headroom among the
  proxies that can be weighed. A proxy with no fresh report is given the mean headroom of
  those that have one (as gRPC's weighted round robin gives a backend without metrics the
  mean weight): a pool where no agent runs weighs by latency alone, and a proxy whose agent
  died is neither favoured nor punished. The floor keeps a proxy that reports itself full
  at a small share rather than none, so its latency and its load stay measured.
* **Throughput**: the requests it completes per second (answered, in time or late), a moving
  average over ``load_smoothing_tau_ms``: a saturated proxy's capacity, which divides its
  queue into a wait (``latency.queue_wait_ms``) and sets its in-flight limit
  (``timers.inflight_limit``).

Pure: times are passed in.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

from counterpoise.core.settings import LoadSettings


def load_factors(
    utilisation: Mapping[str, float | None], settings: LoadSettings
) -> dict[str, float]:
    """``H / H_max`` of every proxy of ``utilisation`` (None: no fresh report, given the mean
    headroom); empty when none reports, so every load factor is 1."""
    headroom = {
        uri: max(1.0 - u, settings.load_headroom_floor)
        for uri, u in utilisation.items()
        if u is not None
    }
    if not headroom:
        return {}
    mean = sum(headroom.values()) / len(headroom)
    best = max(headroom.values())
    return {uri: headroom.get(uri, mean) / best for uri in utilisation}


@dataclasses.dataclass(frozen=True)
class Throughput:
    per_s: float = 0.0
    """Requests completed per second, smoothed."""
    observed_ms: int | None = None
    """When the latest window was counted."""

    def count(self, completed: int, alive: bool, now_ms: int, settings: LoadSettings) -> Throughput:
        """After a window in which ``completed`` requests got an answer; ``alive``: it showed
        a sign of life. Only windows with a sign of life count: a frozen or dead proxy
        completes nothing because it is not there, which says nothing of its capacity, and
        an estimate decayed to 0 meanwhile would make a proxy back from a death look like a
        long queue (its in-flight count over a throughput of 1/s) while the rest of the
        pool drowns."""
        if self.observed_ms is None or now_ms <= self.observed_ms or not alive:
            return Throughput(self.per_s, now_ms)
        dt = now_ms - self.observed_ms
        rate = completed * 1000 / dt
        alpha = 1.0 - math.exp(-dt / settings.load_smoothing_tau_ms)
        return Throughput(self.per_s + (rate - self.per_s) * alpha, now_ms)
