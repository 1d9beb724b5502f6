"""The timers alone: queueing, the first-reply timeout and the in-flight limit, with only the
settings they read."""

from __future__ import annotations

import dataclasses

from counterpoise.core import hold
from counterpoise.core.policy.health import Health, State
from counterpoise.core.policy.timers import (
    LONG_WAIT_FRACTION,
    answered_lately,
    first_reply_timeout_ms,
    inflight_limit,
    queueing,
    saturated,
)
from counterpoise.core.settings import TimerSettings

R = TimerSettings(
    saturated_fr_timer_ms=6000,
    saturated_memory_ms=2000,
    hold_queue_ms=500,
)
"""The settings this part reads, pinned here rather than taken from the defaults."""
FR_TIMER_MS = 1500
"""The failover setting the timers lengthen, passed in."""
NOW = 10_000
LONG_WAIT_MS = FR_TIMER_MS * LONG_WAIT_FRACTION


def test_answered_lately_is_a_sign_of_life_within_fr_timer_ms():
    assert answered_lately(NOW - FR_TIMER_MS + 1, NOW, FR_TIMER_MS)
    assert not answered_lately(NOW - FR_TIMER_MS, NOW, FR_TIMER_MS)
    assert not answered_lately(None, NOW, FR_TIMER_MS)


def test_saturated_while_a_failure_is_recent_and_it_is_not_down():
    failed = Health(State.UP, 0, last_failure_ms=NOW)
    assert saturated(failed, NOW + R.saturated_memory_ms - 1, R)
    assert not saturated(failed, NOW + R.saturated_memory_ms, R)
    assert not saturated(Health(State.UP, 0), NOW, R)
    assert not saturated(Health(State.DOWN, 0, last_failure_ms=NOW), NOW, R)


def test_queueing_needs_an_answer_lately_and_slowness_or_saturation():
    assert queueing(answered_lately=True, slow=True, saturated=False)
    assert queueing(answered_lately=True, slow=False, saturated=True)
    assert not queueing(answered_lately=True, slow=False, saturated=False)
    # Silent for fr_timer_ms: dead or frozen, not queueing, however slow or saturated.
    assert not queueing(answered_lately=False, slow=True, saturated=True)


def timeout(queueing: bool, expected_ms: float, saturated: bool) -> int:
    return first_reply_timeout_ms(queueing, expected_ms, saturated, FR_TIMER_MS, R)


def test_the_long_timeout_goes_to_a_queueing_proxy_with_a_long_wait_or_saturated():
    assert timeout(True, LONG_WAIT_MS, False) == R.saturated_fr_timer_ms
    assert timeout(True, 5.0, True) == R.saturated_fr_timer_ms
    assert timeout(True, LONG_WAIT_MS - 1, False) == FR_TIMER_MS


def test_a_proxy_not_queueing_keeps_the_short_timeout():
    assert timeout(False, 10 * LONG_WAIT_MS, True) == FR_TIMER_MS


def test_the_inflight_limit_is_the_hold_limit_of_its_throughput():
    assert inflight_limit(30.0, R) == 15
    assert inflight_limit(0.5, R) == hold.HOLD_MIN_INFLIGHT
    assert inflight_limit(30.0, dataclasses.replace(R, hold_queue_ms=0)) == 0
