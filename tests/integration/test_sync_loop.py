"""The sync loop on a real Redis (fake shared memory, probes and clock): the store's contract.

What the loop computes is unit-tested on an in-memory store (``tests/unit/test_sync_loop.py``);
these tests are about what it reads from and writes to Redis through ``PoolStore``."""

from __future__ import annotations

import json
import time

import pytest

from counterpoise.core.settings import Settings
from counterpoise.core.tally import Tally
from counterpoise.store.pool import PoolStore

from ..fakes.sync import WALL_EPOCH_MS, Harness

A, B, C = "sip:10.0.0.1:5060", "sip:10.0.0.2:5060", "sip:10.0.0.3:5060"
S = Settings()


def requests(n: int, ms: int) -> Tally:
    return Tally(requests_ok=n, first_reply_ms_sum=n * ms, final_reply_ms_sum=n * ms)


def test_added_proxy_is_in_the_table_after_one_tick(harness: Harness, operator: PoolStore):
    harness.tick()
    operator.add(A)
    harness.tick(100)
    # New proxies start in slow start at the floor of the ramp.
    assert harness.shared.table == {A: pytest.approx(S.health.slow_start_floor)}
    operator.add(B, 2.0)
    harness.tick(100)
    assert set(harness.shared.table) == {A, B}
    assert harness.shared.table[B] == pytest.approx(2.0 * S.health.slow_start_floor)
    assert any(B in line for line in harness.logs)


def test_removed_proxy_leaves_the_table_after_one_tick(harness: Harness, operator: PoolStore):
    operator.add(A)
    operator.add(B)
    harness.tick()
    assert set(harness.shared.table) == {A, B}
    operator.remove(A)
    harness.tick(100)
    assert set(harness.shared.table) == {B}
    assert A not in harness.loop.observed
    assert A not in harness.loop.totals


def test_pool_is_read_only_when_its_version_changes(harness: Harness, operator: PoolStore):
    operator.add(A)
    harness.run(1000)
    assert len(harness.store.times("poll")) == 10
    assert len(harness.store.times("versioned_pool")) == 1
    operator.add(B)
    harness.tick(100)
    assert len(harness.store.times("versioned_pool")) == 2


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
    published_at = start + 2000
    assert record["updated_ms"] == WALL_EPOCH_MS + published_at
    assert record["state"] == "slowstart"
    assert record["base_weight"] == 1.0
    ramp = (
        S.health.slow_start_floor + (1 - S.health.slow_start_floor) * 2000 / S.health.slow_start_ms
    )
    assert record["ramp"] == pytest.approx(ramp, abs=1e-4)
    # A is the only proxy with a latency estimate, so it is the reference (factor 1); no load
    # reports, so no headroom factor: its weight is its base weight 1 times its ramp.
    assert record["latency_factor"] == 1.0
    assert record["weight"] == pytest.approx(ramp, abs=1e-4)
    assert record["latency_ms"] == pytest.approx((80 + 2) / 5)
    assert record["inflight"] == 4
    assert record["window"] == {
        "requests_ok": 4,
        "requests_failed": 0,
        "first_reply_ms_sum": 80,
        "final_reply_ms_sum": 80,
        "trying_ms_sum": 0,  # no 100 Trying came before the replies
        "probes_ok": 1,
        "probes_failed": 0,
        "probe_ms_sum": 2,
        "load_headers_rejected": 0,
        "load_samples": 0,
        "load_milli_sum": 0,
        "late_replies": 0,
        "timeout_excess_ms_sum": 0,
    }
    assert (record["saturated"], record["ejection_refused"]) == (False, False)
    assert record["first_reply_ms"] == 20.0
    assert record["probe_ms"] == 2.0
    assert record["totals"]["requests_ok"] == 4
    assert record["consecutive_failures"] == 0
    assert record["panic"] is False
    b = json.loads(raw[B])
    assert b["base_weight"] == 3.0
    assert b["latency_ms"] is None
    assert record["share"] + b["share"] == pytest.approx(1.0, abs=1e-3)
    # Both ramp alike and weigh by base weight alone (B has no estimate: factor 1), 1:3.
    assert b["weight"] == pytest.approx(3 * ramp, abs=1e-4)
    assert (record["share"], b["share"]) == (
        pytest.approx(0.25, abs=1e-3),
        pytest.approx(0.75, abs=1e-3),
    )
    # The node is listed, its key expires, and the store reads it back.
    assert redis_client.zscore("cp:nodes", "lb1") == WALL_EPOCH_MS + published_at
    assert 0 < redis_client.pttl("cp:weights:lb1") <= S.redis.node_ttl_ms
    node_weights = operator.node_weights(WALL_EPOCH_MS + published_at, S.redis.node_ttl_ms)
    assert node_weights == {"lb1": {A: record, B: b}}


def test_the_retry_budget_is_handed_to_the_workers_and_its_counters_published(
    harness: Harness, operator: PoolStore, redis_client
):
    operator.add(A)
    harness.tick()
    # Nothing relayed yet: the floor alone, over the budget's window.
    floor = int(S.failover.retry_budget_floor_per_s * S.failover.retry_budget_window_ms / 1000)
    assert harness.shared.retry_tokens == floor
    # 100 attempts completed, 10 of them retries the workers spent: 90 requests.
    harness.shared.tallies["101 " + A] = requests(100, 20)
    harness.shared.retries_spent, harness.shared.retries_refused = 10, 3
    harness.tick()
    assert harness.shared.retry_tokens == int(floor + S.failover.retry_budget_fraction * 90) - 10
    harness.run(1100, step_ms=100)
    rejects = redis_client.hgetall("cp:rejects:lb1")
    assert (rejects["retries_spent"], rejects["retries_refused"]) == ("10", "3")
    assert rejects["ejections_refused"] == "0"


def test_nodes_exchange_what_they_send_and_a_dead_ones_expires(
    harness: Harness, operator: PoolStore, redis_client
):
    operator.add(A)
    lb2 = Harness(PoolStore(redis_client, S.redis.key_prefix), S, node="lb2")

    def both(advance_ms: int) -> None:
        for node, n in ((harness, 10), (lb2, 30)):
            key = "101 " + A
            node.shared.tallies[key] = node.shared.tallies.get(key, Tally()) + requests(n, 20)
            node.shared.inflight_counts[A] = n // 10
            node.tick(advance_ms)

    for _ in range(50):
        both(200)
    written = json.loads(redis_client.get("cp:sends:lb2"))
    assert written[A][1] == 3
    assert 0 < redis_client.pttl("cp:sends:lb2") <= S.redis.share_ttl_ms
    assert harness.loop.share.nodes == 2 and lb2.loop.share.nodes == 2
    assert harness.loop.share.share == pytest.approx(0.25, abs=0.01)
    # lb2 stops: Redis expires its publication after share_ttl_ms (real time), and lb1 has
    # the pool again at its next tick.
    deadline = time.monotonic() + 3 * S.redis.share_ttl_ms / 1000
    while redis_client.exists("cp:sends:lb2") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not redis_client.exists("cp:sends:lb2")
    harness.tick(200)
    assert (harness.loop.share.share, harness.loop.share.nodes) == (1.0, 1)
