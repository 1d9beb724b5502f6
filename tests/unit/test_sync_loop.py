"""The sync loop on an in-memory store with a fake clock, shared memory and probe sender.

The same loop on a real Redis is in ``tests/integration`` (``test_sync_loop``,
``test_load_inputs``, ``test_redis_outage``): those are the contract tests of the store.
"""

from __future__ import annotations

import itertools
import math

import pytest

from counterpoise.core import reports
from counterpoise.core.pool import Admin
from counterpoise.core.reports import LoadReport
from counterpoise.core.settings import Settings
from counterpoise.core.tally import Tally

from ..fakes.sync import WALL_EPOCH_MS, Harness, MemoryStore

A, B, C = "sip:10.0.0.1:5060", "sip:10.0.0.2:5060", "sip:10.0.0.3:5060"
STRANGER = "sip:10.9.9.9:5060"
S = Settings()


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def harness(store: MemoryStore) -> Harness:
    return Harness(store, S)


def requests(n: int, ms: int) -> Tally:
    return Tally(requests_ok=n, first_reply_ms_sum=n * ms, final_reply_ms_sum=n * ms)


def report(harness: Harness, proxy: str, utilisation: float = 0.5) -> bytes:
    wall = harness.clock.wall_ms()
    return reports.encode(
        LoadReport(proxy=proxy, seq=0, timestamp_ms=wall, cpu_utilisation=utilisation)
    )


# --- the pool ----------------------------------------------------------------------------


def test_empty_pool_publishes_an_empty_table(harness: Harness):
    harness.tick()
    assert harness.shared.tables == [[]]
    assert harness.loop.redis_ok


def test_pool_change_is_applied_at_the_next_tick(harness: Harness, store: MemoryStore):
    store.add(A)
    harness.tick()
    assert harness.shared.table == {A: pytest.approx(S.health.slow_start_floor)}
    store.add(B, 2.0)
    store.remove(A)
    assert set(harness.shared.table) == {A}  # nothing changes between ticks
    harness.tick(100)
    assert harness.shared.table == {B: pytest.approx(2.0 * S.health.slow_start_floor)}
    assert A not in harness.loop.observed and A not in harness.loop.totals
    assert any(B in line and "version 3" in line for line in harness.logs)
    # The list is read again only when its version changed.
    harness.run(1000)
    assert len(harness.store.times("versioned_pool")) == 2


def test_drained_proxy_weighs_zero_and_comes_back(harness: Harness, store: MemoryStore):
    store.add(A)
    store.add(B)
    harness.run(S.health.slow_start_ms + 100)
    assert harness.shared.table == {A: 1.0, B: 1.0}
    store.set_admin(A, Admin.DRAINED)
    harness.tick(100)
    assert harness.shared.table == {A: 0.0, B: 1.0}
    assert harness.loop.weights[A].state == "drained"
    store.set_admin(A, Admin.ACTIVE)
    harness.tick(100)
    assert harness.shared.table == {A: 1.0, B: 1.0}


def test_table_is_only_republished_on_change(harness: Harness, store: MemoryStore):
    store.add(A)
    harness.run(S.health.slow_start_ms + 100)
    count = len(harness.shared.tables)
    harness.run(1000)
    assert len(harness.shared.tables) == count
    assert harness.shared.table == {A: 1.0}


def test_the_table_says_apart_which_proxy_queues_and_which_waits_long(
    harness: Harness, store: MemoryStore
):
    store.add(A)
    latency_ms = 300

    def worker_counts() -> None:
        key = f"101 {A}"
        before = harness.shared.tallies.get(key, Tally())
        harness.shared.tallies[key] = before + requests(5, latency_ms)

    # Answering in 300 ms: queueing (past half the failure penalty), so holding may limit
    # it, but with the short first-reply timeout (under a third of fr_timer_ms).
    harness.run(3000, each=worker_counts)
    (entry,) = harness.shared.tables[-1]
    assert (entry.uri, entry.queueing, entry.long_wait) == (A, True, False)
    # In 800 ms: the long timeout too.
    latency_ms = 800
    harness.run(3000, each=worker_counts)
    (entry,) = harness.shared.tables[-1]
    assert (entry.queueing, entry.long_wait) == (True, True)
    assert harness.loop.weights[A].fr_timer_ms == S.timers.saturated_fr_timer_ms


def test_while_the_node_sheds_the_table_holds_new_requests_at_shedding_limits(store: MemoryStore):
    settings = Settings.of(hold_queue_ms=500, shed_hold_ms=100, shed_queue_ms=100)
    harness = Harness(store, settings)
    store.add(A)

    def worker_counts() -> None:  # 10 a tick (50/s), 100 ms of work each, 100 Trying at once
        key = f"101 {A}"
        answered = Tally(requests_ok=10, first_reply_ms_sum=1000, trying_ms_sum=0)
        harness.shared.tallies[key] = harness.shared.tallies.get(key, Tally()) + answered

    harness.run(3000, each=worker_counts)
    (entry,) = harness.shared.tables[-1]
    assert not entry.queueing  # fast, no queue wait, nothing shed: new requests pass
    assert 0 < entry.inflight_limit < entry.hold_limit  # 100 ms of work + 100 ms of queue
    harness.shared.sheds = 1
    harness.tick(200)
    (entry,) = harness.shared.tables[-1]
    assert entry.queueing  # past capacity: the shedding limit holds new requests too
    harness.run(2000, each=worker_counts)
    (entry,) = harness.shared.tables[-1]
    assert not entry.queueing  # nothing shed for 2 s: under the capacity again


# --- agents' reports -----------------------------------------------------------------------


def test_report_for_a_proxy_not_in_the_pool_is_rejected_and_counted(
    harness: Harness, store: MemoryStore
):
    store.add(A)
    harness.run(S.health.slow_start_ms + 100)  # subscribed to the announcements, A at full weight
    before = dict(harness.shared.table)
    store.put_report(C, report(harness, C))
    harness.tick(100)
    assert harness.loop.loads.rejected["report"] == 1
    reason = harness.loop.loads.last_reason["report"]
    assert reason == f"{C}: report for a proxy that is not in the pool"
    assert sum(C in line and "rejected report" in line for line in harness.logs) == 1
    assert harness.shared.table == before
    # The count and the reason are published with the weights.
    harness.run(S.redis.publish_interval_ms)
    assert store.rejects["lb1"]["report"] == "1"
    assert store.rejects["lb1"]["report:last"].startswith(C)


def test_report_of_a_proxy_added_in_the_same_tick_is_not_rejected(
    harness: Harness, store: MemoryStore
):
    harness.tick()
    store.add(C)
    store.put_report(C, report(harness, C))
    harness.tick(100)
    assert harness.loop.loads.rejected["report"] == 0
    assert C in harness.shared.table


# --- workers' tallies ----------------------------------------------------------------------


def test_high_latency_of_one_proxy_makes_its_weight_drop(harness: Harness, store: MemoryStore):
    store.add(A)
    store.add(B)
    counts = {A: 0, B: 0}
    latency = {A: 5, B: 5}

    def workers_count() -> None:
        # Two workers; each tick every worker relays 5 requests to every proxy. Tallies are
        # cumulative, as in shared memory.
        for uri in (A, B):
            counts[uri] += 5
            for pid in (101, 102):
                key = f"{pid} {uri}"
                before = harness.shared.tallies.get(key, Tally())
                harness.shared.tallies[key] = before + requests(5, latency[uri])

    harness.run(S.health.slow_start_ms + 100, each=workers_count)
    assert harness.shared.table == {A: 1.0, B: 1.0}
    assert harness.loop.observed[B].latency.estimate_ms == pytest.approx(5.0)
    latency[B] = 200
    harness.run(1000, each=workers_count)
    # Rise tau 300 ms: after 1 s B's estimate is 5 + 195 * (1 - e^(-1000/300)) = 193.0 ms.
    expected = 5 + 195 * (1 - math.exp(-1000 / S.latency.latency_rise_tau_ms))
    assert harness.loop.observed[B].latency.estimate_ms == pytest.approx(expected)
    weight_b = harness.shared.table[B]
    assert weight_b == pytest.approx(15 / (expected + 10), abs=1e-6)
    assert weight_b < 0.1 * harness.shared.table[A]
    assert harness.shared.table[A] == 1.0
    # The window is the sum over both workers.
    assert harness.loop.observed[A].last_window == requests(10, 5)
    assert harness.loop.totals[A].requests_ok == 2 * counts[A]


def test_worker_restart_is_not_counted_negative(harness: Harness, store: MemoryStore):
    store.add(A)
    harness.shared.tallies["101 " + A] = requests(50, 10)
    harness.shared.tallies["102 " + A] = requests(10, 10)
    harness.tick()
    assert harness.loop.totals[A] == requests(60, 10)
    # Worker 101 restarts and counts from zero (2 requests so far); worker 102 goes on.
    harness.shared.tallies["101 " + A] = requests(2, 10)
    harness.shared.tallies["102 " + A] = requests(13, 10)
    harness.tick(100)
    window = harness.loop.observed[A].last_window
    assert window == requests(2 + 3, 10)
    assert min(getattr(window, f) for f in window.__dataclass_fields__) >= 0
    assert harness.loop.totals[A] == requests(65, 10)
    assert harness.loop.observed[A].latency.estimate_ms == pytest.approx(10.0)
    # Then it counts on from its new start.
    harness.shared.tallies["101 " + A] = requests(4, 10)
    harness.tick(100)
    assert harness.loop.observed[A].last_window == requests(2, 10)
    assert harness.loop.totals[A] == requests(67, 10)


def test_tallies_of_proxies_not_in_the_pool_are_ignored(harness: Harness, store: MemoryStore):
    store.add(A)
    harness.shared.tallies["101 " + C] = requests(5, 1)
    harness.tick()
    assert set(harness.loop.totals) == {A}
    assert set(harness.shared.table) == {A}


def pool_with_a_down(harness: Harness, store: MemoryStore) -> Tally:
    """A and B past slow start, then A missing ``down_after_failures`` probes in a row; its
    worker's tally so far."""
    store.add(A)
    store.add(B)
    harness.run(S.health.slow_start_ms + 100)
    failures = Tally()
    for _ in range(S.health.down_after_failures):
        failures += Tally(probes_failed=1)
        harness.shared.tallies["101 " + A] = failures
        harness.tick(100)
    return failures


def test_failing_proxy_goes_down_and_leaves_the_table(harness: Harness, store: MemoryStore):
    pool_with_a_down(harness, store)
    assert harness.loop.weights[A].state == "down"
    assert harness.shared.table == {A: 0.0, B: 1.0}
    assert [line for line in harness.logs if line.startswith(A)] == [
        f"{A} up: slow start over",
        f"{A} down: 3 failures in a row (missed probes)",
    ]


# --- publishing ----------------------------------------------------------------------------


def test_weights_and_their_inputs_are_published_every_interval(
    harness: Harness, store: MemoryStore
):
    store.add(A)
    store.add(B, 3.0)
    harness.shared.inflight_counts[A] = 4
    harness.shared.tallies["101 " + A] = requests(4, 20) + Tally(probes_ok=1, probe_ms_sum=2)
    start = harness.clock.now
    harness.tick()
    harness.run(2500, step_ms=100)
    assert harness.store.times("publish_weights") == [start, start + 1000, start + 2000]
    published_at = WALL_EPOCH_MS + start + 2000
    assert store.nodes == {"lb1": published_at}
    a, b = store.weights["lb1"][A], store.weights["lb1"][B]
    ramp = (
        S.health.slow_start_floor + (1 - S.health.slow_start_floor) * 2000 / S.health.slow_start_ms
    )
    assert (a["state"], a["updated_ms"], a["inflight"]) == ("slowstart", published_at, 4)
    assert a["ramp"] == pytest.approx(ramp, abs=1e-4)
    assert a["weight"] == pytest.approx(ramp * a["latency_factor"], abs=1e-4)
    assert a["latency_ms"] == pytest.approx((80 + 2) / 5)  # 4 requests of 20 ms, a 2 ms probe
    assert a["first_reply_ms"] == 20.0  # of the last window that had requests
    assert a["totals"]["requests_ok"] == 4 and a["probe_ms"] == 2.0
    assert b["base_weight"] == 3.0 and b["latency_ms"] is None and b["inflight"] == 0
    assert a["share"] + b["share"] == pytest.approx(1.0, abs=1e-3)


# --- the store failing -----------------------------------------------------------------------


def test_failing_store_keeps_the_table_backs_off_and_recovers(harness: Harness, store: MemoryStore):
    store.add(A)
    store.add(B)
    harness.tick()
    table = harness.shared.table
    calls_before = len(harness.store.calls)

    store.fail()
    outage_start = harness.clock.now
    harness.run(4000, step_ms=50)  # no tick may raise
    # The workers keep routing on the last pool (ramping on: the loop still computes).
    assert set(harness.shared.table) == {A, B}
    assert harness.shared.table[A] > table[A]
    assert not harness.loop.redis_ok
    assert len(harness.probes.times(A)) == 1 + 4000 // S.probes.probe_interval_ms
    # Backoff: 250, 500, 1000, 2000 ms between attempts; one log line for the outage.
    first = outage_start + 50
    attempts = [t for _, t in harness.store.calls[calls_before:]]
    assert attempts == [first + d for d in (0, 250, 750, 1750, 3750)]
    assert sum("unreachable" in line for line in harness.logs) == 1

    # The pool changes meanwhile; a report announced while down is lost with the subscription.
    store.recover()
    store.remove(B)
    store.add(C)
    store.put_report(STRANGER, report(harness, STRANGER))
    next_try = attempts[-1] + S.redis.redis_backoff_max_ms
    harness.run(next_try - harness.clock.now - 50, step_ms=50)
    assert set(harness.shared.table) == {A, B}  # not retried before the backoff ends
    harness.tick(50)
    assert set(harness.shared.table) == {A, C}
    assert harness.loop.redis_ok
    assert any("reachable again" in line for line in harness.logs)
    assert harness.loop.loads.rejected["report"] == 0
    # Subscribed again: the next announcement is read.
    store.put_report(STRANGER, report(harness, STRANGER))
    harness.tick(50)
    assert harness.loop.loads.rejected["report"] == 1
    harness.run(S.redis.publish_interval_ms, step_ms=50)
    assert set(store.weights["lb1"]) == {A, C}


def test_loop_started_while_the_store_is_down_routes_nothing_then_loads(
    harness: Harness, store: MemoryStore
):
    store.add(A)
    store.fail()
    harness.tick()
    assert harness.shared.table == {} and harness.probes.sent == []
    store.recover()
    harness.run(S.redis.redis_backoff_initial_ms, step_ms=50)
    assert set(harness.shared.table) == {A}
    loaded_at = harness.clock.now
    # Probed in the next round, within one interval of the first tick.
    harness.run(S.probes.probe_interval_ms, step_ms=50)
    assert len(harness.probes.times(A)) == 1
    assert harness.probes.times(A)[0] - loaded_at <= S.probes.probe_interval_ms


# --- probes ----------------------------------------------------------------------------------


def test_probes_are_sent_once_per_interval(harness: Harness, store: MemoryStore):
    store.add(A)
    store.add(B)
    start = harness.clock.now
    harness.tick()
    harness.run(3050, step_ms=50)
    expected = [start + i * S.probes.probe_interval_ms for i in range(4)]
    assert harness.probes.times(A) == expected
    assert harness.probes.times(B) == expected
    assert len(harness.probes.sent) == 8


def test_probe_interval_with_ticks_that_do_not_divide_it(harness: Harness, store: MemoryStore):
    store.add(A)
    start = harness.clock.now
    harness.tick()
    harness.run(3000, step_ms=300)
    times = harness.probes.times(A)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert times[0] == start
    assert all(S.probes.probe_interval_ms <= gap < S.probes.probe_interval_ms + 300 for gap in gaps)
    assert len(times) == 3  # at 0, 1200, 2400


def test_a_down_proxy_is_probed_every_down_interval(harness: Harness, store: MemoryStore):
    failures = pool_with_a_down(harness, store)
    assert harness.loop.weights[A].state == "down"
    down_at = harness.clock.now
    harness.run(2000, step_ms=100)
    gaps = [b - a for a, b in itertools.pairwise(t for t in harness.probes.times(A) if t > down_at)]
    assert gaps and max(gaps) <= S.probes.down_probe_interval_ms
    assert len([t for t in harness.probes.times(B) if t > down_at]) <= 2  # B: every second
    # Two answered probes bring it back (up: it was down briefly), in the log too.
    harness.shared.tallies["101 " + A] = failures + Tally(probes_ok=2, probe_ms_sum=4)
    harness.tick(100)
    assert harness.loop.weights[A].state == "up"
    assert harness.logs[-1] == f"{A} up after {harness.clock.now - down_at} ms down"


def test_a_proxy_the_workers_hear_from_is_not_marked_down(harness: Harness, store: MemoryStore):
    store.add(A)
    store.add(B)
    harness.tick()
    # Both time out requests for a second, with no request answered; the workers keep
    # hearing replies from A (its late 100 Trying), none from B.
    for tick in range(1, 8):
        harness.shared.tallies["101 " + A] = Tally(requests_failed=3 * tick)
        harness.shared.tallies["101 " + B] = Tally(requests_failed=3 * tick)
        harness.shared.heard["101 " + A] = tick  # a new stamp each tick
        harness.clock.advance(200)
        harness.tick()
    assert harness.loop.observed[A].health.state != "down"
    assert harness.loop.observed[B].health.state == "down"


def test_a_proxy_just_gone_down_may_return_until_the_grace_is_over(
    harness: Harness, store: MemoryStore
):
    """While it may (``admission.may_return``), a full pool holds instead of shedding."""
    failures = pool_with_a_down(harness, store)
    harness.shared.tallies["101 " + A] = failures + requests(1, 5)  # a late answer: alive
    harness.tick(100)
    harness.shared.tallies["101 " + A] = failures + requests(1, 5) + Tally(probes_failed=3)
    harness.tick(100)
    assert harness.loop.weights[A].state == "down"
    returning = {entry.uri: entry.returning for entry in harness.shared.tables[-1]}
    assert returning == {A: True, B: False}
    harness.tick(S.timers.shed_outage_grace_ms)
    returning = {entry.uri: entry.returning for entry in harness.shared.tables[-1]}
    assert returning == {A: False, B: False}
