"""The service estimate: how long a proxy's workers spend on a request, and how long requests
wait in its queue before a worker takes one.

A proxy answers 100 Trying when a worker takes the request, so a request's first reply other
than 100 (``Tally.first_reply_ms_sum``) splits in two at the 100 (``Tally.trying_ms_sum``):

* the **queue wait** ``W``, relaying to the 100: what it waited behind the proxy's earlier
  requests;
* the **service time** ``S``, the 100 to the first reply: the proxy's own work, which a
  queue does not lengthen.

A proxy that sends no 100 before its first reply shows no wait, and its service time is the
whole first reply: larger than the work, never smaller, so a limit sized from it errs on
the side of keeping the proxy fed.

Both are moving averages of each window's means over ``load_smoothing_tau_ms``, the
throughput's (``capacity.Throughput``): the concurrency a limit is sized from is their
product, ``throughput x S`` (Little's law), so both follow the same stretch of time.

Pure: times are passed in.
"""

from __future__ import annotations

import dataclasses
import math

from counterpoise.core.settings import LoadSettings
from counterpoise.core.tally import Tally


@dataclasses.dataclass(frozen=True)
class Service:
    service_ms: float | None = None
    """``S``; None until a window had a request answered."""
    wait_ms: float = 0.0
    """``W``."""
    sampled_ms: int | None = None
    """When the latest window with requests answered was folded in."""

    def fold(self, window: Tally, now_ms: int, settings: LoadSettings) -> Service:
        """The estimate with a window's answered requests folded in; unchanged without any."""
        if window.requests_ok <= 0:
            return self
        wait = window.trying_ms_sum / window.requests_ok
        service = max(window.first_reply_ms_sum - window.trying_ms_sum, 0) / window.requests_ok
        if self.service_ms is None or self.sampled_ms is None:
            return Service(service, wait, now_ms)
        dt = max(now_ms - self.sampled_ms, 0)
        alpha = 1.0 - math.exp(-dt / settings.load_smoothing_tau_ms)
        return Service(
            self.service_ms + (service - self.service_ms) * alpha,
            self.wait_ms + (wait - self.wait_ms) * alpha,
            now_ms,
        )
