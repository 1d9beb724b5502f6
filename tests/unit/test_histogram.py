"""The route-time histogram the SIP workers keep and the timer process sums."""

from __future__ import annotations

import pytest

from counterpoise.monitoring.histogram import ROUTE_BUCKETS_S, Histogram


def test_observations_land_in_cumulative_buckets_and_survive_encoding() -> None:
    one, other = Histogram(), Histogram()
    one.observe_ns(80_000)  # 80 us: the 100 us bucket
    one.observe_ns(100_000)  # exactly on a bound: counted in it (le = less or equal)
    other.observe_ns(3_000_000)  # 3 ms
    other.observe_ns(900_000_000)  # 0.9 s: above every bound, only in +Inf
    total = Histogram.decode(one.encode())
    total.add(Histogram.decode(other.encode()))
    buckets = dict(total.cumulative())
    assert buckets["5e-05"] == 0 and buckets["0.0001"] == 2
    assert buckets["0.002"] == 2 and buckets["0.005"] == 3 and buckets["0.05"] == 3
    assert buckets["+Inf"] == total.count == 4
    assert total.sum_us == 80 + 100 + 3000 + 900_000
    assert len(buckets) == len(ROUTE_BUCKETS_S) + 1


@pytest.mark.parametrize("text", ["", "1 2 3", "-1 " + "0 " * (len(ROUTE_BUCKETS_S) + 1), "x"])
def test_garbled_text_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        Histogram.decode(text)
