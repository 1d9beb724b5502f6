"""The weight policy with an injected clock (explicit ``now_ms``) and default settings."""

from __future__ import annotations

import dataclasses
import math

import pytest

from counterpoise.core.policy.health import State
from counterpoise.core.policy.latency import Average, window_latency_ms
from counterpoise.core.policy.observed import Observed, new_observed, observe
from counterpoise.core.policy.weights import Weighting, weigh
from counterpoise.core.settings import Settings
from counterpoise.core.tally import Tally

S = Settings()


def ok(n: int, ms: int) -> Tally:
    """n requests answered, each with first reply after ``ms``."""
    return Tally(requests_ok=n, first_reply_ms_sum=n * ms, final_reply_ms_sum=n * ms)


def failed(n: int = 1) -> Tally:
    return Tally(requests_failed=n)


def probes(n: int, ms: int = 1) -> Tally:
    return Tally(probes_ok=n, probe_ms_sum=n * ms)


def probe_failed(n: int = 1) -> Tally:
    return Tally(probes_failed=n)


def feed(proxy: Observed, windows: list[tuple[int, Tally]]) -> Observed:
    for now, window in windows:
        proxy = observe(proxy, window, now, S)
    return proxy


def up_at(latency_ms: int, now: int = S.health.slow_start_ms) -> Observed:
    """A proxy with one sample of ``latency_ms`` at 0, out of slow start at ``now``."""
    proxy = feed(new_observed(0), [(0, ok(1, latency_ms)), (now, Tally())])
    assert proxy.health.state == State.UP
    return proxy


def test_defaults_used_by_these_tests():
    assert (S.latency.latency_rise_tau_ms, S.latency.latency_fall_tau_ms) == (300, 2000)
    assert S.latency.latency_offset_ms == 10.0
    assert S.latency.failure_penalty_ms == 500.0
    assert (S.health.down_after_failures, S.health.up_after_probes) == (3, 2)
    assert (S.health.slow_start_ms, S.health.slow_start_floor) == (8000, 0.1)


def test_first_sample_sets_the_estimate():
    proxy = observe(new_observed(0), ok(4, 25), 100, S)
    assert proxy.latency.estimate_ms == 25.0
    assert proxy.latency.sampled_ms == 100
    assert proxy.last_window == ok(4, 25)


def test_latency_rises_with_tau_300():
    proxy = feed(new_observed(0), [(0, ok(1, 10)), (300, ok(1, 100))])
    # L += (x - L) * (1 - exp(-dt / tau)) with dt = tau = 300: 10 + 90 * 0.632 = 66.89
    assert proxy.latency.estimate_ms == pytest.approx(10 + 90 * (1 - math.exp(-1)))
    assert proxy.latency.estimate_ms == pytest.approx(66.89, abs=0.01)


def test_latency_falls_with_tau_2000():
    proxy = feed(new_observed(0), [(0, ok(1, 100)), (2000, ok(1, 10))])
    assert proxy.latency.estimate_ms == pytest.approx(100 - 90 * (1 - math.exp(-1)))
    assert proxy.latency.estimate_ms == pytest.approx(43.11, abs=0.01)


def test_rise_is_faster_than_fall_over_the_same_time():
    risen = feed(new_observed(0), [(0, ok(1, 10)), (300, ok(1, 110))])
    fallen = feed(new_observed(0), [(0, ok(1, 110)), (300, ok(1, 10))])
    assert risen.latency.estimate_ms == pytest.approx(10 + 100 * (1 - math.exp(-300 / 300)))
    assert fallen.latency.estimate_ms == pytest.approx(110 - 100 * (1 - math.exp(-300 / 2000)))
    assert risen.latency.estimate_ms - 10 > 4 * (110 - fallen.latency.estimate_ms)


def test_dt_is_measured_from_the_last_sample_not_the_last_window():
    # An empty window at 200 must not restart the clock of the average.
    proxy = feed(new_observed(0), [(0, ok(1, 10)), (200, Tally()), (300, ok(1, 100))])
    assert proxy.latency.estimate_ms == pytest.approx(10 + 90 * (1 - math.exp(-1)))


def test_many_steps_compound_like_one():
    # Ten windows 30 ms apart at a constant 100 ms give the same as one window after 300 ms.
    steps = [(0, ok(1, 10))] + [(30 * i, ok(1, 100)) for i in range(1, 11)]
    proxy = feed(new_observed(0), steps)
    assert proxy.latency.estimate_ms == pytest.approx(10 + 90 * (1 - math.exp(-1)))


def test_window_mean_mixes_requests_probes_and_failures():
    window = Tally(
        requests_ok=2, first_reply_ms_sum=20, final_reply_ms_sum=900, probes_ok=1, probe_ms_sum=4
    ) + failed(1)
    # (20 + 4 + 500) / 4; the final-reply time is not part of the estimate.
    assert window_latency_ms(window, S.latency) == pytest.approx(131.0)


def test_worked_example_of_the_docstring():
    # A at 2 ms, B at 150 ms, base 1: A weighs 12/12 = 1, B 12/160 = 0.075, B's share 7 %.
    proxy = {"sip:a": up_at(2), "sip:b": up_at(150)}
    weights = weigh({"sip:a": 1.0, "sip:b": 1.0}, set(), proxy, S.health.slow_start_ms, S)
    assert weights["sip:a"].weight == pytest.approx(1.0)
    assert weights["sip:b"].weight == pytest.approx(0.075)
    assert weights["sip:b"].latency_factor == pytest.approx(12 / 160)
    share = weights["sip:b"].weight / (weights["sip:a"].weight + weights["sip:b"].weight)
    assert share == pytest.approx(0.07, abs=0.001)
    assert {w.state for w in weights.values()} == {State.UP}


def test_base_weight_multiplies():
    proxy = {"sip:a": up_at(5), "sip:b": up_at(5)}
    weights = weigh({"sip:a": 3.0, "sip:b": 1.0}, set(), proxy, S.health.slow_start_ms, S)
    assert (weights["sip:a"].weight, weights["sip:b"].weight) == (3.0, 1.0)


def test_failure_is_charged_the_failure_penalty():
    proxy = observe(new_observed(0), failed(1), 0, S)
    assert proxy.latency.estimate_ms == S.latency.failure_penalty_ms
    assert proxy.health.consecutive_failures == 1
    # 9 answered in 2 ms and 1 failure: (18 + 500) / 10 = 51.8 ms (the settings' "~52 ms").
    proxy = observe(new_observed(0), ok(9, 2) + failed(1), 0, S)
    assert proxy.latency.estimate_ms == pytest.approx(51.8)
    assert proxy.health.consecutive_failures == 0
    assert window_latency_ms(probe_failed(1), S.latency) == S.latency.failure_penalty_ms


def test_fast_503s_do_not_make_a_proxy_look_fastest():
    # a answers everything in 20 ms. b answers 90 % in 2 ms and fails 10 % at once (fast 503s):
    # without the penalty b would look 10 times faster; with it b is the slower one.
    a, b = new_observed(0), new_observed(0)
    for now in range(0, 10_001, 100):
        a = observe(a, ok(10, 20), now, S)
        b = observe(b, ok(9, 2) + failed(1), now, S)
    assert b.health.state == State.UP  # each window has successes: no failure streak
    weights = weigh({"sip:a": 1.0, "sip:b": 1.0}, set(), {"sip:a": a, "sip:b": b}, 10_000, S)
    assert weights["sip:b"].weight < weights["sip:a"].weight
    assert weights["sip:b"].weight == pytest.approx((20 + 10) / (51.8 + 10))
    assert weights["sip:a"].weight == pytest.approx(1.0)


def test_proxy_failing_everything_fast_is_not_fastest_before_it_is_down():
    # Two windows of instant failures (no success, not yet down): L = 500, not ~0.
    a = up_at(20)
    b = feed(new_observed(0), [(0, failed(1)), (100, failed(1))])
    assert b.health.state == State.SLOW_START and b.health.consecutive_failures == 2
    weights = weigh({"sip:a": 1.0, "sip:b": 1.0}, set(), {"sip:a": a, "sip:b": b}, 8000, S)
    assert weights["sip:b"].latency_factor == pytest.approx(30 / 510)
    assert weights["sip:a"].latency_factor == 1.0


def test_consecutive_failures_mark_the_proxy_down():
    proxy = up_at(5)
    for i, now in enumerate((9000, 9100)):
        proxy = observe(proxy, failed(1), now, S)
        assert proxy.health.state == State.UP
        assert proxy.health.consecutive_failures == i + 1
    proxy = observe(proxy, probe_failed(1), 9200, S)  # probes count too
    assert proxy.health.state == State.DOWN
    assert proxy.health.since_ms == 9200
    weights = weigh({"sip:a": 1.0, "sip:b": 1.0}, set(), {"sip:a": proxy, "sip:b": up_at(5)},
                    9200, S)  # fmt: skip
    assert weights["sip:a"].weight == 0.0
    assert weights["sip:a"].state == State.DOWN
    assert weights["sip:a"].panic is False
    assert weights["sip:b"].weight > 0


def test_enough_failures_in_one_window_mark_the_proxy_down():
    proxy = observe(up_at(5), failed(S.health.down_after_failures), 9000, S)
    assert proxy.health.state == State.DOWN


def test_a_success_in_between_resets_the_streak():
    proxy = feed(
        up_at(5),
        [(9000, failed()), (9100, failed()), (9200, ok(1, 5)), (9300, failed()), (9400, failed())],
    )
    assert proxy.health.state == State.UP
    assert proxy.health.consecutive_failures == 2
    # An answered probe resets it as well.
    proxy = feed(proxy, [(9500, probes(1)), (9600, failed()), (9700, failed())])
    assert proxy.health.state == State.UP
    assert proxy.health.consecutive_failures == 2


def down_at(now: int) -> Observed:
    proxy = feed(up_at(5), [(now - 200, failed()), (now - 100, failed()), (now, failed())])
    assert proxy.health.state == State.DOWN and proxy.health.since_ms == now
    return proxy


LONG = S.health.slow_start_after_down_ms
"""An outage this long ends in slow start."""


def test_answered_probes_bring_a_long_down_proxy_back_into_slow_start():
    proxy = down_at(10_000)
    proxy = observe(proxy, probes(1), 10_000 + LONG, S)
    assert proxy.health.state == State.DOWN
    assert proxy.health.probe_streak == 1
    proxy = observe(proxy, probes(1), 11_000 + LONG, S)
    assert proxy.health.state == State.SLOW_START
    assert proxy.health.since_ms == 11_000 + LONG
    assert proxy.health.consecutive_failures == 0


def test_a_failed_probe_breaks_the_probe_streak():
    proxy = feed(down_at(10_000), [(11_000, probes(1)), (12_000, probe_failed()),
                                    (13_000, probes(1))])  # fmt: skip
    assert proxy.health.state == State.DOWN
    assert proxy.health.probe_streak == 1
    proxy = observe(proxy, probes(1), 14_000, S)
    assert proxy.health.state == State.UP  # back after 4 s: a brief outage


def test_slow_start_ramps_from_the_floor_to_full_then_up():
    # A single proxy: its own estimate is the reference, so its weight is exactly the ramp.
    proxy = feed(down_at(10_000), [(10_000 + LONG, probes(1)), (11_000 + LONG, probes(1))])
    start = 11_000 + LONG

    def weight_at(now: int, h: Observed) -> Weighting:
        return weigh({"sip:a": 1.0}, set(), {"sip:a": h}, now, S)["sip:a"]

    first = weight_at(start, proxy)
    assert first.state == State.SLOW_START
    assert first.ramp == pytest.approx(S.health.slow_start_floor)
    assert first.weight == pytest.approx(0.1)
    quarter = weight_at(start + S.health.slow_start_ms // 4, proxy)
    assert quarter.weight == pytest.approx(0.1 + 0.9 * 0.25)
    half = weight_at(start + S.health.slow_start_ms // 2, proxy)
    assert half.weight == pytest.approx(0.55)
    proxy = observe(proxy, Tally(), start + S.health.slow_start_ms - 1, S)
    assert proxy.health.state == State.SLOW_START
    proxy = observe(proxy, Tally(), start + S.health.slow_start_ms, S)
    assert proxy.health.state == State.UP
    assert proxy.health.since_ms == start + S.health.slow_start_ms
    done = weight_at(start + S.health.slow_start_ms, proxy)
    assert (done.state, done.ramp, done.weight) == (State.UP, 1.0, 1.0)


def test_ramp_multiplies_the_latency_factor_and_base():
    slow = feed(new_observed(1000), [(1000, ok(1, 50))])
    weights = weigh({"sip:a": 1.0, "sip:b": 2.0}, set(), {"sip:a": up_at(10), "sip:b": slow},
                    1000 + S.health.slow_start_ms // 2, S)  # fmt: skip
    assert weights["sip:b"].ramp == pytest.approx(0.55)
    assert weights["sip:b"].weight == pytest.approx(2.0 * (20 / 60) * 0.55)


def test_new_proxy_starts_in_slow_start_at_the_floor():
    proxy = new_observed(500)
    assert proxy.health.state == State.SLOW_START
    weighting = weigh({"sip:a": 2.0}, set(), {"sip:a": proxy}, 500, S)["sip:a"]
    assert weighting.latency_ms is None
    assert weighting.weight == pytest.approx(2.0 * S.health.slow_start_floor)


def test_drained_proxy_weighs_zero():
    proxy = {"sip:a": up_at(5), "sip:b": up_at(5)}
    weights = weigh({"sip:a": 1.0, "sip:b": 1.0}, {"sip:b"}, proxy, 8000, S)
    assert (weights["sip:b"].weight, weights["sip:b"].state) == (0.0, State.DRAINED)
    assert (weights["sip:a"].weight, weights["sip:a"].state) == (1.0, State.UP)
    # Drained wins over down too.
    proxy["sip:b"] = down_at(9000)
    weights = weigh({"sip:a": 1.0, "sip:b": 1.0}, {"sip:b"}, proxy, 9000, S)
    assert (weights["sip:b"].weight, weights["sip:b"].state) == (0.0, State.DRAINED)


def test_all_active_proxies_down_is_panic_mode():
    proxy = {"sip:a": down_at(9000), "sip:b": down_at(9000), "sip:c": up_at(5)}
    weights = weigh({"sip:a": 1.0, "sip:b": 3.0, "sip:c": 1.0}, {"sip:c"}, proxy, 9000, S)
    assert weights["sip:a"].weight == pytest.approx(1.0 * S.health.slow_start_floor)
    assert weights["sip:b"].weight == pytest.approx(3.0 * S.health.slow_start_floor)
    assert weights["sip:a"].panic and weights["sip:b"].panic
    assert weights["sip:a"].state == weights["sip:b"].state == State.DOWN
    assert (weights["sip:c"].weight, weights["sip:c"].state, weights["sip:c"].panic) == (
        0.0,
        State.DRAINED,
        False,
    )


def test_no_panic_while_one_active_proxy_is_not_down():
    proxy = {"sip:a": down_at(9000), "sip:b": up_at(5)}
    weights = weigh({"sip:a": 1.0, "sip:b": 1.0}, set(), proxy, 9000, S)
    assert weights["sip:a"].weight == 0.0
    assert not weights["sip:a"].panic
    assert weights["sip:b"].weight == 1.0


def test_down_proxy_latency_is_not_the_reference():
    # a is down with a 0 ms estimate: the others are compared among themselves.
    a = down_at(9000)
    a = dataclasses.replace(a, latency=Average(0.0, a.latency.sampled_ms))
    proxy = {"sip:a": a, "sip:b": up_at(10), "sip:c": up_at(30)}
    weights = weigh({"sip:a": 1.0, "sip:b": 1.0, "sip:c": 1.0}, set(), proxy, 9000, S)
    assert weights["sip:b"].latency_factor == 1.0
    assert weights["sip:c"].latency_factor == pytest.approx(20 / 40)
