"""The timers: how long a request relayed to a proxy waits for its first reply, and how many
requests may be in flight to it before new ones are held at the balancer.

Both turn on whether the proxy is **queueing** (``queueing``): answering, but slowly. It
answered something within ``fr_timer_ms`` (``answered_lately``), and it is **saturated**
(``saturated``: failed a request within ``saturated_memory_ms`` and is not down) or its
latency estimate is slow (``latency.slow``).

``fr_timer_ms`` is the failover setting these timers lengthen: it is passed in, not read.

* **First-reply timeout** (``first_reply_timeout_ms``): ``saturated_fr_timer_ms`` for a
  queueing proxy that is saturated or whose expected first reply is past
  ``LONG_WAIT_FRACTION`` of ``fr_timer_ms``: its queue, not death, may delay it, and
  waiting beats retrying on a proxy as busy while the first one still does the work. Else
  ``fr_timer_ms``: a proxy that answers in a third of that and then stays silent for all of
  it is dead or frozen more likely than queued, so its calls fail over after ``fr_timer_ms``.
* **Hold limit** (``inflight_limit``): the in-flight count at which a proxy's queue wait
  reaches ``hold_queue_ms`` (``core.hold``); it holds new requests back only while the
  proxy is queueing.

Pure: times are passed in.
"""

from __future__ import annotations

from counterpoise.core import hold
from counterpoise.core.policy.health import Health, State
from counterpoise.core.settings import TimerSettings

LONG_WAIT_FRACTION = 1 / 3
"""A queueing proxy whose expected first reply is past this fraction of ``fr_timer_ms`` gets
``saturated_fr_timer_ms``: a third, 500 ms of the default 1.5 s, as a retransmission timer
waits a few round trips before it gives up (TCP's RTO is the mean plus four deviations)."""


def answered_lately(last_life_ms: int | None, now_ms: int, fr_timer_ms: int) -> bool:
    """A sign of life (``last_life_ms``) within ``fr_timer_ms``: as long as a request is given
    to answer, so a proxy silent for less may be queueing, and one silent for more is dead
    or frozen more likely than queued."""
    return last_life_ms is not None and now_ms - last_life_ms < fr_timer_ms


def saturated(health: Health, now_ms: int, settings: TimerSettings) -> bool:
    """Failing requests lately while not down: overloaded, or about to be found dead."""
    return (
        health.state != State.DOWN
        and health.last_failure_ms is not None
        and now_ms - health.last_failure_ms < settings.saturated_memory_ms
    )


def queueing(answered_lately: bool, slow: bool, saturated: bool) -> bool:
    """Answering, but slowly: it ``answered_lately``, and it is ``slow`` (``latency.slow``)
    or ``saturated``."""
    return answered_lately and (slow or saturated)


def first_reply_timeout_ms(
    queueing: bool,
    expected_ms: float,
    saturated: bool,
    fr_timer_ms: int,
    settings: TimerSettings,
) -> int:
    """The first-reply timeout of a request relayed now, ``fr_timer_ms`` or
    ``saturated_fr_timer_ms``; ``expected_ms``: its expected first reply (the latency
    estimate or the queue wait, the longer)."""
    if not queueing:
        return fr_timer_ms
    long_wait = expected_ms >= fr_timer_ms * LONG_WAIT_FRACTION
    if long_wait or saturated:
        return settings.saturated_fr_timer_ms
    return fr_timer_ms


def inflight_limit(throughput_per_s: float, settings: TimerSettings) -> int:
    """The in-flight count at which new requests are held, while the proxy is queueing."""
    return hold.inflight_limit(throughput_per_s, settings.hold_queue_ms)
