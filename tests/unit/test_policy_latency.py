"""The latency estimate alone: the moving average, silence, queue wait and the latency factor,
with only the settings it reads."""

from __future__ import annotations

import math

import pytest

from counterpoise.core.policy.latency import (
    Average,
    Silence,
    latency_factor,
    queue_wait_ms,
    slow,
    window_latency_ms,
)
from counterpoise.core.settings import LatencySettings
from counterpoise.core.tally import Tally

R = LatencySettings(
    latency_rise_tau_ms=300,
    latency_fall_tau_ms=2000,
    latency_offset_ms=10.0,
    failure_penalty_ms=500.0,
)
"""The settings this part reads, pinned here rather than taken from the defaults."""


def answered(ms: int, n: int = 1) -> Tally:
    return Tally(requests_ok=n, first_reply_ms_sum=n * ms, final_reply_ms_sum=n * ms)


def test_the_first_sample_is_the_estimate():
    average = Average().fold(answered(25, 4), 100, R)
    assert average == Average(25.0, 100)


def test_it_rises_with_the_rise_time_constant_and_falls_with_the_fall_one():
    risen = Average(10.0, 0).fold(answered(100), 300, R)
    assert risen.estimate_ms == pytest.approx(10 + 90 * (1 - math.exp(-1)))
    fallen = Average(100.0, 0).fold(answered(10), 2000, R)
    assert fallen.estimate_ms == pytest.approx(100 - 90 * (1 - math.exp(-1)))
    assert risen.sampled_ms == 300 and fallen.sampled_ms == 2000


def test_a_window_without_samples_changes_nothing():
    # Late replies say the proxy is alive, not how fast: dt keeps running from the last sample.
    average = Average(10.0, 0)
    assert average.fold(Tally(late_replies=3), 200, R) is average
    assert average.fold(Tally(), 200, R).fold(answered(100), 300, R).estimate_ms == (
        pytest.approx(10 + 90 * (1 - math.exp(-1)))
    )


def test_a_sample_at_the_same_time_does_not_move_it():
    assert Average(10.0, 500).fold(answered(100), 500, R).estimate_ms == 10.0


def test_the_window_mean_charges_failures_the_penalty_and_timeouts_their_wait():
    window = Tally(requests_ok=2, first_reply_ms_sum=20, probes_ok=1, probe_ms_sum=4)
    window += Tally(requests_failed=1)
    assert window_latency_ms(window, R) == pytest.approx((20 + 4 + 500) / 4)
    timed_out = Tally().with_timeout(4000, 500).with_timeout(4000, 500)
    assert window_latency_ms(timed_out, R) == 4000
    assert window_latency_ms(Tally(probes_failed=1), R) == R.failure_penalty_ms


def test_silence_counts_only_once_new_requests_went_out():
    heard = Silence().observe(alive=True, now_ms=1000, inflight=3)
    assert heard == Silence(1000, 3, 3, False)
    # The same 3 in flight, nothing heard: ringing calls, no silence.
    ringing = heard.observe(alive=False, now_ms=1400, inflight=3)
    assert ringing.silence_ms(1400) == 0
    # One more went out: silent since the last sign of life.
    asked = ringing.observe(alive=False, now_ms=1600, inflight=4)
    assert asked.silence_ms(1600) == 600
    # Still silent once those requests time out and fewer are in flight.
    fewer = asked.observe(alive=False, now_ms=1800, inflight=1)
    assert fewer.silence_ms(1800) == 800
    # An unknown count keeps the last one.
    assert fewer.observe(alive=False, now_ms=2000, inflight=None).inflight == 1
    # Any sign of life ends it.
    assert fewer.observe(alive=True, now_ms=2000, inflight=1).silence_ms(2000) == 0


def test_a_proxy_never_heard_has_no_silence():
    assert Silence().observe(alive=False, now_ms=500, inflight=9).silence_ms(900) == 0


def test_queue_wait_is_littles_law():
    assert queue_wait_ms(60, 20.0) == pytest.approx(3000)
    assert queue_wait_ms(60, 10.0) == pytest.approx(6000)
    # A throughput below 1/s counts as 1/s.
    assert queue_wait_ms(3, 0.0) == pytest.approx(3000)


def test_slow_from_half_the_failure_penalty():
    assert slow(R.failure_penalty_ms / 2, R)
    assert not slow(R.failure_penalty_ms / 2 - 1, R)
    assert not slow(None, R)


def test_the_latency_factor_of_the_worked_example():
    # A at 2 ms is the reference; B at 150 ms: 12 / 160.
    assert latency_factor(2.0, 2.0, R) == 1.0
    assert latency_factor(150.0, 2.0, R) == pytest.approx(0.075)
