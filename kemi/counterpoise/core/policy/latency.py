"""The latency estimate: how long a request sent to a proxy now would take to get its first
reply, in ms. It is the one metric the weight divides by, as Tower's ``peak_ewma`` is.

Three signals estimate it, and the estimate is the largest of them, because each one sees a
slowness the others miss:

* **The moving average** ``L`` of what requests and probes took: an exponentially weighted
  average of each window's mean (first-reply time of requests, round trip of probes; a
  failure counts as ``failure_penalty_ms``, or what it waited when that is more). It rises
  with time constant ``latency_rise_tau_ms`` and falls with ``latency_fall_tau_ms``::

      L += (x - L) * (1 - exp(-dt / tau))

  ``dt`` runs from the previous sample, not the previous window. Rising faster than it
  falls makes a proxy that slows down lose its share at once, and one that recovers win it
  back only once it has stayed fast.
* **Silence** ``S``: how long a proxy sent new requests has said nothing. A live proxy
  answers a new request at once (100 Trying), so silence is a stall or a death showing
  before the first request times out, which the average cannot see until then.
* **Queue wait** ``Q``: what a new request would wait in a queueing proxy's queue, by
  Little's law (in flight over completed per second). The average measures requests that
  entered the queue earlier; this measures the queue as it stands, so two saturated
  proxies of unequal capacity get unequal weights. Only while the proxy is queueing (the
  caller says so): otherwise its in-flight requests may be ringing calls, not a queue.

The expected latency is ``max(L, S, Q)``; the weight's latency factor is
``(L_min + offset) / (max(L, S, Q) + offset)`` with ``offset = latency_offset_ms``, so that
proxies a few ms apart weigh alike.

Pure: times are passed in.
"""

from __future__ import annotations

import dataclasses
import math

from counterpoise.core.settings import LatencySettings
from counterpoise.core.tally import Tally


@dataclasses.dataclass(frozen=True)
class Average:
    """The moving average ``L`` of the samples."""

    estimate_ms: float | None = None
    """``L``; None until the first sample."""
    sampled_ms: int | None = None
    """When the latest sample was folded in: ``dt`` runs from here."""

    def fold(self, window: Tally, now_ms: int, settings: LatencySettings) -> Average:
        """The average with a window of samples folded in; unchanged if it has none (late
        replies alone say the proxy is alive, not how fast)."""
        if window.samples == 0:
            return self
        sample = window_latency_ms(window, settings)
        if self.estimate_ms is None or self.sampled_ms is None:
            return Average(sample, now_ms)
        rising = sample > self.estimate_ms
        tau = settings.latency_rise_tau_ms if rising else settings.latency_fall_tau_ms
        dt = max(now_ms - self.sampled_ms, 0)
        moved = self.estimate_ms + (sample - self.estimate_ms) * (1.0 - math.exp(-dt / tau))
        return Average(moved, now_ms)


def window_latency_ms(window: Tally, settings: LatencySettings) -> float:
    """Mean latency of a window's samples, failures charged ``failure_penalty_ms`` (timeouts
    what they waited, when that is more)."""
    total = (
        window.first_reply_ms_sum
        + window.probe_ms_sum
        + settings.failure_penalty_ms * window.failures
        + window.timeout_excess_ms_sum
    )
    return total / window.samples


@dataclasses.dataclass(frozen=True)
class Silence:
    """What silence ``S`` is measured from: the latest sign of life, and whether new
    requests went to the proxy since."""

    last_life_ms: int | None = None
    """When the proxy last showed a sign of life (a success, a late reply, any reply heard)."""
    inflight: int = 0
    """Requests in flight to it from this node, at the latest window."""
    inflight_at_life: int = 0
    """``inflight`` at its latest sign of life: more in flight later, with nothing heard,
    means new requests went to it."""
    asked_since_life: bool = False
    """New requests went to it since its latest sign of life. Its silence lasts until it
    answers, even once those requests time out and fewer are in flight again."""

    def observe(self, alive: bool, now_ms: int, inflight: int | None) -> Silence:
        """After a window: ``alive`` if it showed a sign of life; ``inflight`` the requests in
        flight now (None: unknown, keep the last count)."""
        count = self.inflight if inflight is None else inflight
        if alive:
            return Silence(now_ms, count, count, False)
        asked = self.asked_since_life or count > self.inflight_at_life
        return dataclasses.replace(self, inflight=count, asked_since_life=asked)

    def silence_ms(self, now_ms: int) -> int:
        """``S``: how long it has said nothing while new requests were sent to it; 0 when
        nothing new went to it (a proxy whose calls all ring says nothing for long, and
        that is no silence)."""
        if self.last_life_ms is None or not self.asked_since_life:
            return 0
        return now_ms - self.last_life_ms


def queue_wait_ms(inflight: int, throughput_per_s: float) -> float:
    """``Q``: what a new request would wait behind ``inflight`` others at a proxy completing
    ``throughput_per_s`` (Little's law; the throughput taken as at least 1 a second, so a
    proxy that has completed nothing yet is not an endless queue)."""
    return 1000 * inflight / max(throughput_per_s, 1.0)


def slow(estimate_ms: float | None, settings: LatencySettings) -> bool:
    """An estimate past half the failure penalty: a queue builds up before the first timeout,
    and a proxy this slow is taken as queueing (``timers.queueing``) before it times out."""
    return estimate_ms is not None and estimate_ms >= settings.failure_penalty_ms / 2


def latency_factor(expected_ms: float, reference_ms: float, settings: LatencySettings) -> float:
    """``(L_min + offset) / (expected + offset)``: 1 for the fastest proxy, smaller for the
    slower ones; ``reference_ms`` is ``L_min``."""
    offset = settings.latency_offset_ms
    return (reference_ms + offset) / (expected_ms + offset)
