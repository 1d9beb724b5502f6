"""Load signals: staleness tracks, utilisation of reports and headers, the LoadBook, and the
policy's load factor."""

from __future__ import annotations

import math

import msgpack
import pytest

from counterpoise.core import load, reports
from counterpoise.core.load import LoadBook, counted, renew
from counterpoise.core.policy.health import Health, State
from counterpoise.core.policy.latency import Average
from counterpoise.core.policy.observed import Observed
from counterpoise.core.policy.weights import weigh
from counterpoise.core.reports import BadReport, HeaderLoad, LoadReport
from counterpoise.core.settings import Settings

S = Settings()
TAU = S.load.load_smoothing_tau_ms
A, B, C = "sip:a", "sip:b", "sip:c"
WALL = 1_700_000_000_000


def up(latency_ms: float) -> Observed:
    return Observed(Health(state=State.UP, since_ms=0), Average(latency_ms, sampled_ms=0))


# --- tracks --------------------------------------------------------------------------------


def step(track: load.Track | None, value: float, now_ms: int) -> load.Track:
    """``track`` after ``value`` arrived at ``now_ms``, with the default settings."""
    return renew(track, value, now_ms, S.load.load_blackout_ms, S.load.load_expiry_ms, TAU)


def test_a_track_counts_only_after_the_blackout():
    track = step(None, 0.5, 1000)
    assert counted(track, 1000, S.load.load_blackout_ms, S.load.load_expiry_ms) is None
    for now in range(2000, 1000 + S.load.load_blackout_ms, 1000):
        track = step(track, 0.5, now)
    # The blackout is over, but nothing has arrived since: nothing to count yet.
    assert (
        counted(
            track, 1000 + S.load.load_blackout_ms, S.load.load_blackout_ms, S.load.load_expiry_ms
        )
        is None
    )
    track = step(track, 0.5, 1000 + S.load.load_blackout_ms)
    assert (
        counted(
            track, 1000 + S.load.load_blackout_ms, S.load.load_blackout_ms, S.load.load_expiry_ms
        )
        == 0.5
    )


def test_a_track_not_renewed_expires_and_its_next_value_starts_a_new_blackout():
    track = step(None, 0.9, 0)
    track = step(track, 0.9, S.load.load_blackout_ms)
    last = S.load.load_blackout_ms
    assert (
        counted(track, last + S.load.load_expiry_ms, S.load.load_blackout_ms, S.load.load_expiry_ms)
        == 0.9
    )
    assert (
        counted(
            track, last + S.load.load_expiry_ms + 1, S.load.load_blackout_ms, S.load.load_expiry_ms
        )
        is None
    )
    again = step(track, 0.2, last + S.load.load_expiry_ms + 1)
    assert again.since_ms == last + S.load.load_expiry_ms + 1
    assert counted(again, again.since_ms, S.load.load_blackout_ms, S.load.load_expiry_ms) is None


def test_values_in_the_blackout_are_not_averaged():
    # A restarted Kamailio says 0 (its tmx statistics not yet refreshed), then 0.8.
    track = step(None, 0.0, 0)
    for now in range(200, S.load.load_blackout_ms, 200):
        track = step(track, 0.0 if now < 1800 else 0.8, now)
    assert track.utilisation == 0.8 and track.values == 0  # shown, not counted
    track = step(track, 0.8, S.load.load_blackout_ms)
    assert (
        counted(track, S.load.load_blackout_ms, S.load.load_blackout_ms, S.load.load_expiry_ms)
        == 0.8
    )


def test_after_the_blackout_the_average_is_the_mean_then_moves_with_the_time_constant():
    start = S.load.load_blackout_ms
    track = step(step(None, 0.8, 0), 0.8, start)
    for i in range(1, 10):
        track = step(track, 0.8 if i % 2 else 0.4, start + 200 * i)
    assert track.utilisation == pytest.approx((6 * 0.8 + 4 * 0.4) / 10)  # the mean of ten
    # A time constant later each value weighs what the moving average gives it.
    for i in range(10, 40):
        track = step(track, 0.8, start + 200 * i)
    alpha = 1 - math.exp(-200 / TAU)
    before = track.utilisation
    track = step(track, 0.0, start + 200 * 40)
    assert track.utilisation == pytest.approx(before * (1 - alpha))
    # With a long gap between values (an agent's second value, a time constant later), the
    # moving average weighs the new one more than the mean of two would.
    sparse = step(step(step(None, 0.0, 0), 0.0, start), 1.0, start + TAU)
    assert sparse.utilisation == pytest.approx(1 - math.exp(-1))


def test_report_utilisation_is_the_higher_of_cpu_and_transactions_over_capacity():
    base = {"proxy": A, "seq": 1, "timestamp_ms": WALL}
    assert load.report_utilisation(LoadReport(**base, cpu_utilisation=0.2)) == 0.2
    both = LoadReport(**base, cpu_utilisation=0.2, transactions=6, capacity=8)
    assert load.report_utilisation(both) == 0.75
    over = LoadReport(**base, transactions=80, capacity=8)
    assert load.report_utilisation(over) == 1.0
    assert load.report_utilisation(LoadReport(**base, transactions=6)) is None
    assert load.report_utilisation(LoadReport(**base, error="no proxy")) is None


def test_header_utilisation_is_active_over_workers():
    assert load.header_utilisation(HeaderLoad(tx=9, workers=4, active=3)) == 0.75
    assert load.header_utilisation(HeaderLoad(tx=9, workers=4, active=40)) == 1.0
    with pytest.raises(BadReport, match="workers=0"):
        load.header_utilisation(HeaderLoad(workers=0, active=1))
    with pytest.raises(BadReport, match="needs"):
        load.header_utilisation(HeaderLoad(tx=3))


def test_header_utilisation_falls_back_to_transactions_in_tm_over_workers():
    # A proxy that reports no active count still weighs by the requests it holds.
    assert load.header_utilisation(HeaderLoad(tx=3, workers=4)) == 0.75
    assert load.header_utilisation(HeaderLoad(tx=12, workers=4)) == 1.0
    # active, when present, wins over tx: tx also holds the ended transactions' 5 s wait.
    assert load.header_utilisation(HeaderLoad(tx=8, workers=4, active=1)) == 0.25
    with pytest.raises(BadReport, match="workers"):
        load.header_utilisation(HeaderLoad(tx=3))


def test_header_utilisation_prefers_the_busy_time_average():
    # A one-worker proxy whose transaction is active at the reply's instant, busy 40 % of
    # the last second: 40 %, not 100 %.
    assert load.header_utilisation(HeaderLoad(tx=9, workers=1, active=1, busy=400)) == 0.4
    assert load.header_utilisation(HeaderLoad(busy=0)) == 0.0
    # A request that ends its window counts whole in it: more than 1000 is capped.
    assert load.header_utilisation(HeaderLoad(workers=2, active=0, busy=1300)) == 1.0


# --- the policy's load factor --------------------------------------------------------------


def test_worked_example_with_load_of_the_policy_docstring():
    health = {A: up(2), B: up(2)}
    weights = weigh({A: 1.0, B: 1.0}, set(), health, S.health.slow_start_ms, S, {A: 0.3, B: 0.9})
    assert weights[A].weight == pytest.approx(1.0)
    assert weights[B].load_factor == pytest.approx(0.1 / 0.7)
    share = weights[B].weight / (weights[A].weight + weights[B].weight)
    assert share == pytest.approx(0.125, abs=0.001)
    assert weights[B].utilisation == 0.9


def test_without_reports_weights_are_latency_alone():
    health = {A: up(2), B: up(2)}
    plain = weigh({A: 1.0, B: 1.0}, set(), health, S.health.slow_start_ms, S)
    empty = weigh({A: 1.0, B: 1.0}, set(), health, S.health.slow_start_ms, S, {A: None, B: None})
    assert plain == empty
    assert {w.load_factor for w in plain.values()} == {1.0}


def test_a_proxy_without_report_gets_the_mean_headroom():
    health = {A: up(2), B: up(2), C: up(2)}
    weights = weigh({A: 1, B: 1, C: 1}, set(), health, S.health.slow_start_ms, S, {A: 0.2, B: 0.6})
    # headrooms 0.8 and 0.4, mean 0.6 for C; normalised by 0.8
    assert weights[C].load_factor == pytest.approx(0.6 / 0.8)
    assert weights[B].load_factor == pytest.approx(0.4 / 0.8)


def test_a_saturated_proxy_keeps_the_headroom_floor():
    health = {A: up(2), B: up(2)}
    weights = weigh({A: 1.0, B: 1.0}, set(), health, S.health.slow_start_ms, S, {A: 0.0, B: 1.0})
    assert weights[B].load_factor == pytest.approx(S.load.load_headroom_floor)


# --- the LoadBook ----------------------------------------------------------------------------


def report(proxy: str = A, seq: int = 0, **fields) -> bytes:
    return reports.encode(LoadReport(proxy=proxy, seq=seq, timestamp_ms=WALL, **fields))


def absurd(**wire: object) -> bytes:
    """A report as an agent with a bug could write it (wire keys, no validation)."""
    data = {"v": 1, "u": A, "s": 9, "t": WALL, "p": 1, "r": 0} | wire
    return msgpack.packb(data)


def fed_book(logs: list[str]) -> LoadBook:
    """A book whose report of A counts: u = 0.5."""
    book = LoadBook(S, logs.append)
    for i in range(4):
        book.take_report(A, report(seq=i, cpu_utilisation=0.5), i * 1000, WALL)
    assert book.utilisation(A, 3000) == 0.5
    return book


def test_the_same_report_read_again_does_not_renew_the_track():
    book = fed_book([])
    same = report(seq=3, cpu_utilisation=0.5)
    book.take_report(A, same, 3000 + S.load.load_expiry_ms, WALL)
    assert book.utilisation(A, 3000 + S.load.load_expiry_ms + 1) is None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xc1garbage", "not msgpack"),
        (absurd(c=50.0), "above 1"),
        (absurd(x=-3), "negative"),
        (absurd(cp=float("nan")), "not a finite number"),
        (report(proxy=B), "report names sip:b"),
    ],
)
def test_bad_reports_are_counted_logged_once_and_change_nothing(raw: bytes, reason: str):
    logs: list[str] = []
    book = fed_book(logs)
    book.take_report(A, raw, 3100, WALL)
    book.take_report(A, raw + b"", 3200, WALL)  # the same bytes again: already counted
    assert book.rejected[load.REPORT] == 1
    assert reason in book.last_reason[load.REPORT]
    assert book.utilisation(A, 3200) == 0.5
    book.reject(load.REPORT, A, reason)
    assert len(logs) == 1 and reason in logs[0]


def test_header_values_count_after_the_blackout_and_rejections_do_not_touch_them():
    logs: list[str] = []
    book = LoadBook(S, logs.append)
    for now in range(0, S.load.load_blackout_ms + 1, 500):
        book.take_header(B, now, 0.8)
    assert book.utilisation(B, S.load.load_blackout_ms) == 0.8
    book.reject(load.HEADER, B, "X-CP-Load: 'junk' is not key=value", 5)
    assert book.rejected[load.HEADER] == 5
    assert book.utilisation(B, S.load.load_blackout_ms) == 0.8
    assert book.describe(B, S.load.load_blackout_ms)["header"]["counts"] is True
