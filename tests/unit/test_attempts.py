"""The rules of a relayed request's attempts (``core/attempts.py``)."""

from __future__ import annotations

import pytest

from counterpoise.core import attempts
from counterpoise.core.attempts import Failure


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
        (failure(rang=True, status=503), True),  # the proxy's own 5xx after the ringing
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
