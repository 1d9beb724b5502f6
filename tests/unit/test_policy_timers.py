"""The timers alone: queueing, the first-reply timeout and the in-flight limit, with only the
settings they read."""

from __future__ import annotations

import dataclasses

from counterpoise.core import hold
from counterpoise.core.policy.timers import (
    LONG_WAIT_FRACTION,
    answered_lately,
    first_reply_timeout_ms,
    inflight_limit,
    queueing,
)


@dataclasses.dataclass(frozen=True)
class Rules:
    """Exactly the fields ``TimerSettings`` names: reading any other fails."""

    fr_timer_ms: int = 1500
    saturated_fr_timer_ms: int = 6000
    hold_queue_ms: int = 500


R = Rules()
NOW = 10_000
LONG_WAIT_MS = R.fr_timer_ms * LONG_WAIT_FRACTION


def test_answered_lately_is_a_sign_of_life_within_fr_timer_ms():
    assert answered_lately(NOW - R.fr_timer_ms + 1, NOW, R)
    assert not answered_lately(NOW - R.fr_timer_ms, NOW, R)
    assert not answered_lately(None, NOW, R)


def test_queueing_needs_an_answer_lately_and_slowness_or_saturation():
    assert queueing(answered_lately=True, slow=True, saturated=False)
    assert queueing(answered_lately=True, slow=False, saturated=True)
    assert not queueing(answered_lately=True, slow=False, saturated=False)
    # Silent for fr_timer_ms: dead or frozen, not queueing, however slow or saturated.
    assert not queueing(answered_lately=False, slow=True, saturated=True)


def test_the_long_timeout_goes_to_a_queueing_proxy_with_a_long_wait_or_saturated():
    assert first_reply_timeout_ms(True, LONG_WAIT_MS, False, R) == R.saturated_fr_timer_ms
    assert first_reply_timeout_ms(True, 5.0, True, R) == R.saturated_fr_timer_ms
    assert first_reply_timeout_ms(True, LONG_WAIT_MS - 1, False, R) == R.fr_timer_ms


def test_a_proxy_not_queueing_keeps_the_short_timeout():
    assert first_reply_timeout_ms(False, 10 * LONG_WAIT_MS, True, R) == R.fr_timer_ms


def test_the_inflight_limit_is_the_hold_limit_of_its_throughput():
    assert inflight_limit(30.0, R) == 15
    assert inflight_limit(0.5, R) == hold.HOLD_MIN_INFLIGHT
    assert inflight_limit(30.0, dataclasses.replace(R, hold_queue_ms=0)) == 0
