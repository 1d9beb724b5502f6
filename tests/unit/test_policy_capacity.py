"""The load estimate alone: load factors from reported utilisation, and the measured
throughput, with only the settings it reads."""

from __future__ import annotations

import pytest

from counterpoise.core.policy.capacity import Throughput, load_factors
from counterpoise.core.settings import LoadSettings

R = LoadSettings(
    load_headroom_floor=0.05,
    load_smoothing_tau_ms=3000,
)
"""The settings this part reads, pinned here rather than taken from the defaults."""
WINDOW_MS = 200


def test_the_load_factor_is_headroom_over_the_largest():
    factors = load_factors({"a": 0.3, "b": 0.9}, R)
    assert factors == {"a": 1.0, "b": pytest.approx(0.1 / 0.7)}


def test_no_report_at_all_gives_no_factor():
    assert load_factors({"a": None, "b": None}, R) == {}
    assert load_factors({}, R) == {}


def test_a_proxy_without_a_report_gets_the_mean_headroom():
    factors = load_factors({"a": 0.2, "b": 0.6, "c": None}, R)
    assert factors["c"] == pytest.approx(0.6 / 0.8)
    assert factors["b"] == pytest.approx(0.4 / 0.8)


def test_a_full_proxy_keeps_the_headroom_floor():
    assert load_factors({"a": 0.0, "b": 1.0}, R)["b"] == pytest.approx(R.load_headroom_floor)


def test_the_first_window_only_starts_the_clock():
    assert Throughput().count(10, True, 1000, R) == Throughput(0.0, 1000)


def test_throughput_converges_to_the_completion_rate():
    throughput = Throughput(0.0, 0)
    # 5 completions each 200 ms for five time constants: 25 a second, within 1 %.
    for now in range(WINDOW_MS, 5 * R.load_smoothing_tau_ms + 1, WINDOW_MS):
        throughput = throughput.count(5, True, now, R)
    assert throughput.per_s == pytest.approx(25, rel=0.01)


def test_windows_without_a_sign_of_life_do_not_count():
    steady = Throughput(25.0, 1000)
    silent = steady.count(0, False, 1200, R)
    assert silent == Throughput(25.0, 1200)
    # The next live window measures from the silent one, not from the last live one.
    back = silent.count(5, True, 1400, R)
    assert back.per_s == pytest.approx(25.0)


def test_a_window_at_the_same_time_only_restamps():
    assert Throughput(25.0, 1000).count(50, True, 1000, R) == Throughput(25.0, 1000)
