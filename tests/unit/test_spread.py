"""The evenly spread uniforms of the first draw (``core.spread``), alone."""

from __future__ import annotations

import pytest

from counterpoise.core.spread import GoldenSpread


@pytest.mark.parametrize("start", [0.0, 0.5, 0.999999, 1.25])
def test_values_are_in_the_unit_interval(start):
    spread = GoldenSpread(start)
    assert all(0.0 <= spread() < 1.0 for _ in range(10_000))


def test_each_value_is_the_last_plus_the_golden_step_mod_1():
    # The golden ratio's conjugate, (sqrt(5) - 1) / 2, written out.
    spread = GoldenSpread(0.25)
    assert [round(spread(), 6) for _ in range(3)] == [0.868034, 0.486068, 0.104102]


@pytest.mark.parametrize("start", [0.0, 0.3, 0.77])
@pytest.mark.parametrize("interval", [(0.0, 0.25), (0.25, 0.5), (0.1, 0.9), (0.6, 0.61)])
def test_every_interval_holds_its_length_of_the_values_within_three(start, interval):
    # Any prefix of the sequence: n <= 1000 values put n * (b - a) in [a, b) up to 3 (the
    # error grows like log(n)), where 1000 independent uniforms miss by their sd,
    # sqrt(n * p * (1 - p)) (~14 for p = 0.25).
    low, high = interval
    spread = GoldenSpread(start)
    inside = 0
    for n in range(1, 1001):
        inside += low <= spread() < high
        assert abs(inside - n * (high - low)) <= 3, (n, inside)
