"""The sync loop with fake shared memory and probes, a real Redis and a fake clock."""

from __future__ import annotations

import itertools
import json
import math

import pytest

from counterpoise.core.pool import Admin
from counterpoise.core.settings import Settings
from counterpoise.core.tally import Tally
from counterpoise.store.pool import PoolStore

from .fakes import WALL_EPOCH_MS, Harness

A, B, C = "sip:10.0.0.1:5060", "sip:10.0.0.2:5060", "sip:10.0.0.3:5060"
S = Settings()


@pytest.fixture
def harness(redis_client) -> Harness:
    return Harness(redis_client, S)


@pytest.fixture
def operator(redis_client) -> PoolStore:
    """The CLI's side of the store (a separate object from the loop's)."""
    return PoolStore(redis_client, S.key_prefix)


def requests(n: int, ms: int) -> Tally:
    return Tally(requests_ok=n, first_reply_ms_sum=n * ms, final_reply_ms_sum=n * ms)


def test_empty_pool_publishes_an_empty_table(harness: Harness):
    harness.tick()
    assert harness.shared.tables == [[]]
    assert harness.loop.redis_ok


def test_added_proxy_is_in_the_table_after_one_tick(harness: Harness, operator: PoolStore):
    harness.tick()
    operator.add(A)
    harness.tick(100)
    # New proxies start in slow start at the floor of the ramp.
    assert harness.shared.table == {A: pytest.approx(S.slow_start_floor)}
    assert A in harness.shared.inflight_counts
    operator.add(B, 2.0)
    harness.tick(100)
    assert set(harness.shared.table) == {A, B}
    assert harness.shared.table[B] == pytest.approx(2.0 * S.slow_start_floor)
    assert any(B in line for line in harness.logs)


def test_removed_proxy_leaves_the_table_after_one_tick(harness: Harness, operator: PoolStore):
    operator.add(A)
    operator.add(B)
    harness.tick()
    assert set(harness.shared.table) == {A, B}
    operator.remove(A)
    harness.tick(100)
    assert set(harness.shared.table) == {B}
    assert A not in harness.loop.health
    assert A not in harness.loop.totals


def test_drained_proxy_weighs_zero(harness: Harness, operator: PoolStore):
    operator.add(A)
    operator.add(B)
    harness.run(S.slow_start_ms + 100)
    assert harness.shared.table == {A: 1.0, B: 1.0}
    operator.set_admin(A, Admin.DRAINED)
    harness.tick(100)
    assert harness.shared.table == {A: 0.0, B: 1.0}
    assert harness.loop.weights[A].state == "drained"
    operator.set_admin(A, "active")
    harness.tick(100)
    assert harness.shared.table[A] == 1.0


def test_table_is_only_republished_on_change(harness: Harness, operator: PoolStore):
    operator.add(A)
    harness.run(S.slow_start_ms + 100)
    count = len(harness.shared.tables)
    harness.run(1000)
    assert len(harness.shared.tables) == count
    assert harness.shared.table == {A: 1.0}


def test_pool_is_read_only_when_its_version_changes(harness: Harness, operator: PoolStore):
    operator.add(A)
    harness.run(1000)
    assert len(harness.store.times("poll")) == 10
    assert len(harness.store.times("versioned_pool")) == 1
    operator.add(B)
    harness.tick(100)
    assert len(harness.store.times("versioned_pool")) == 2


def test_high_latency_of_one_proxy_makes_its_weight_drop(harness: Harness, operator: PoolStore):
    operator.add(A)
    operator.add(B)
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

    harness.run(S.slow_start_ms + 100, each=workers_count)
    assert harness.shared.table == {A: 1.0, B: 1.0}
    assert harness.loop.health[B].latency_ms == pytest.approx(5.0)
    latency[B] = 200
    harness.run(1000, each=workers_count)
    # Rise tau 300 ms: after 1 s B's estimate is 5 + 195 * (1 - e^(-1000/300)) = 193.0 ms.
    expected = 5 + 195 * (1 - math.exp(-1000 / S.latency_rise_tau_ms))
    assert harness.loop.health[B].latency_ms == pytest.approx(expected)
    weight_b = harness.shared.table[B]
    assert weight_b == pytest.approx(15 / (expected + 10), abs=1e-6)
    assert weight_b < 0.1 * harness.shared.table[A]
    assert harness.shared.table[A] == 1.0
    # The window is the sum over both workers.
    assert harness.loop.health[A].last_window == requests(10, 5)
    assert harness.loop.totals[A].requests_ok == 2 * counts[A]


def test_worker_restart_is_not_counted_negative(harness: Harness, operator: PoolStore):
    operator.add(A)
    harness.shared.tallies["101 " + A] = requests(50, 10)
    harness.shared.tallies["102 " + A] = requests(10, 10)
    harness.tick()
    assert harness.loop.totals[A] == requests(60, 10)
    # Worker 101 restarts and counts from zero (2 requests so far); worker 102 goes on.
    harness.shared.tallies["101 " + A] = requests(2, 10)
    harness.shared.tallies["102 " + A] = requests(13, 10)
    harness.tick(100)
    window = harness.loop.health[A].last_window
    assert window == requests(2 + 3, 10)
    assert min(getattr(window, f) for f in window.__dataclass_fields__) >= 0
    assert harness.loop.totals[A] == requests(65, 10)
    assert harness.loop.health[A].latency_ms == pytest.approx(10.0)
    # Then it counts on from its new start.
    harness.shared.tallies["101 " + A] = requests(4, 10)
    harness.tick(100)
    assert harness.loop.health[A].last_window == requests(2, 10)
    assert harness.loop.totals[A] == requests(67, 10)


def test_tallies_of_proxies_not_in_the_pool_are_ignored(harness: Harness, operator: PoolStore):
    operator.add(A)
    harness.shared.tallies["101 " + C] = requests(5, 1)
    harness.tick()
    assert set(harness.loop.totals) == {A}
    assert set(harness.shared.table) == {A}


def test_failing_proxy_goes_down_and_leaves_the_table(harness: Harness, operator: PoolStore):
    operator.add(A)
    operator.add(B)
    harness.run(S.slow_start_ms + 100)
    failures = Tally()
    for _ in range(S.down_after_failures):
        failures += Tally(probes_failed=1)
        harness.shared.tallies["101 " + A] = failures
        harness.tick(100)
    assert harness.loop.weights[A].state == "down"
    assert harness.shared.table == {A: 0.0, B: 1.0}


def test_probes_are_sent_once_per_interval(harness: Harness, operator: PoolStore):
    operator.add(A)
    operator.add(B)
    start = harness.clock.now
    harness.tick()
    harness.run(3050, step_ms=50)
    expected = [start + i * S.probe_interval_ms for i in range(4)]
    assert harness.probes.times(A) == expected
    assert harness.probes.times(B) == expected
    assert len(harness.probes.sent) == 8


def test_probe_interval_with_ticks_that_do_not_divide_it(harness: Harness, operator: PoolStore):
    operator.add(A)
    start = harness.clock.now
    harness.tick()
    harness.run(3000, step_ms=300)
    times = harness.probes.times(A)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert times[0] == start
    assert all(S.probe_interval_ms <= gap < S.probe_interval_ms + 300 for gap in gaps)
    assert len(times) == 3  # at 0, 1200, 2400


def test_weights_and_inputs_are_published_every_interval(
    harness: Harness, operator: PoolStore, redis_client
):
    operator.add(A)
    operator.add(B, 3.0)
    harness.shared.inflight_counts[A] = 4
    start = harness.clock.now
    harness.shared.tallies["101 " + A] = requests(4, 20) + Tally(probes_ok=1, probe_ms_sum=2)
    harness.tick()
    harness.run(2500, step_ms=100)
    publishes = harness.store.times("publish_weights")
    assert publishes == [start, start + 1000, start + 2000]

    raw = redis_client.hgetall("cp:weights:lb1")
    assert set(raw) == {A, B}
    record = json.loads(raw[A])
    loop = harness.loop
    published_at = start + 2000
    assert record["updated_ms"] == WALL_EPOCH_MS + published_at
    assert record["state"] == "slowstart"
    assert record["base_weight"] == 1.0
    ramp = S.slow_start_floor + (1 - S.slow_start_floor) * 2000 / S.slow_start_ms
    assert record["ramp"] == pytest.approx(ramp, abs=1e-4)
    assert record["weight"] == pytest.approx(ramp * record["latency_factor"], abs=1e-4)
    assert record["latency_ms"] == pytest.approx((80 + 2) / 5)
    assert record["inflight"] == 4
    assert record["window"] == {
        "requests_ok": 4,
        "requests_failed": 0,
        "first_reply_ms_sum": 80,
        "final_reply_ms_sum": 80,
        "probes_ok": 1,
        "probes_failed": 0,
        "probe_ms_sum": 2,
        "load_headers_rejected": 0,
        "load_samples": 0,
        "load_milli_sum": 0,
    }
    assert record["first_reply_ms"] == 20.0
    assert record["probe_ms"] == 2.0
    assert record["totals"]["requests_ok"] == 4
    assert record["consecutive_failures"] == 0
    assert record["panic"] is False
    b = json.loads(raw[B])
    assert b["base_weight"] == 3.0
    assert b["latency_ms"] is None
    assert record["share"] + b["share"] == pytest.approx(1.0, abs=1e-3)
    assert b["share"] == pytest.approx(
        loop.weights[B].weight / (loop.weights[A].weight + loop.weights[B].weight), abs=1e-4
    )
    # The node is listed, its key expires, and the store reads it back.
    assert redis_client.zscore("cp:nodes", "lb1") == WALL_EPOCH_MS + published_at
    assert 0 < redis_client.pttl("cp:weights:lb1") <= S.node_ttl_ms
    node_weights = operator.node_weights(WALL_EPOCH_MS + published_at, S.node_ttl_ms)
    assert node_weights == {"lb1": {A: record, B: b}}
