"""The rules of a relayed request's attempts (``core/attempts.py``)."""

from __future__ import annotations

import pytest

from counterpoise.core import attempts
from counterpoise.core.attempts import Failure, Outcome


def failure(**changes: object) -> Failure:
    values = dict(
        timed_out=False,
        replied=True,
        rang=False,
        status=503,
        canceled=False,
        attempts=1,
        held=False,
    )
    return Failure(**(values | changes))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        (failure(), True),
        (failure(status=408), True),
        (failure(status=599), True),
        (failure(status=486), False),
        (failure(status=None), False),
        (failure(timed_out=True, replied=False, status=408), True),  # silent proxy
        (failure(timed_out=True, replied=True, status=408), True),  # 100 Trying, then nothing
        (failure(timed_out=True, rang=True, status=408), False),  # rang, nobody answered
        # Issue 10: a 5xx or 408 after the callee rang is the callee's answer, relayed.
        (failure(rang=True, status=503), False),
        (failure(rang=True, status=408), False),
        (failure(canceled=True), False),
        (failure(attempts=3), False),
        (failure(held=True), False),
    ],
)
def test_fails_over_only_when_the_proxy_failed(case: Failure, expected: bool):
    verdict = attempts.fails_over(case, max_attempts=3, take_token=lambda: True)
    assert (verdict == attempts.Verdict.RETRY) is expected


def test_proxy_silent_is_a_timeout_without_any_reply():
    assert failure(timed_out=True, replied=False).proxy_silent
    assert not failure(timed_out=True, replied=True).proxy_silent
    assert not failure(timed_out=False, replied=False).proxy_silent


def test_elapsed_time_survives_the_31_bit_wrap():
    before_wrap = attempts.STAMP_MASK - 5
    assert attempts.elapsed_ms(attempts.stamp(before_wrap), before_wrap + 20) == 20
    assert attempts.elapsed_ms(None, 123) == 0


def test_first_reply_and_latency_sample():
    assert not attempts.marks_first_reply(100, False)
    assert attempts.marks_first_reply(180, False)
    assert not attempts.marks_first_reply(183, True)
    assert attempts.latency_sample_ms(None, 800, 500) == 500
    assert attempts.latency_sample_ms(30, 800, 500) == 30


@pytest.mark.parametrize(
    ("status", "rang", "from_proxy", "outcome"),
    [
        (200, False, True, Outcome.OK),
        (486, True, True, Outcome.OK),
        (503, False, True, Outcome.PROXY_FAILED),
        (408, False, True, Outcome.PROXY_FAILED),
        (503, True, True, Outcome.NOT_THE_PROXY),  # the callee rang, then failed
        (408, True, True, Outcome.NOT_THE_PROXY),
        (200, False, False, Outcome.NOT_THE_PROXY),  # not from the proxy's address
        (503, False, False, Outcome.NOT_THE_PROXY),
    ],
)
def test_reply_outcomes(status: int, rang: bool, from_proxy: bool, outcome: Outcome) -> None:
    assert attempts.outcome(status, rang, from_proxy) == outcome


def test_timeouts_count_against_the_proxy_only_when_it_said_nothing() -> None:
    assert attempts.timeout_outcome(silent=True, rang=False) == Outcome.PROXY_FAILED
    assert attempts.timeout_outcome(silent=False, rang=True) == Outcome.NOT_THE_PROXY
    assert attempts.timeout_outcome(silent=False, rang=False) == Outcome.OK


def test_in_flight_counts_of_past_epochs_are_stale() -> None:
    now = 10 * attempts.INFLIGHT_EPOCH_MS + 5
    current, previous = attempts.live_epochs(now)
    assert (current, previous) == (10, 9)
    keys = [f"sip:a {current}", f"sip:a {previous}", "sip:a 8", "sip:b 3", "junk"]
    assert attempts.stale_inflight(keys, now) == ["sip:a 8", "sip:b 3", "junk"]


def test_the_epoch_before_zero_is_the_last_one_before_the_stamp_wrapped() -> None:
    last = attempts.epoch(attempts.STAMP_MASK)
    assert attempts.live_epochs(attempts.STAMP_MASK + 1) == (0, last)
    assert last == attempts.EPOCHS - 1
