"""Nodes sharing one pool through an in-memory store: each node's share and in-flight limits
follow the nodes that join, leave, die, or lose the store; with a fake clock.

The same exchange on a real Redis is in ``tests/integration/test_sync_loop.py``.
"""

from __future__ import annotations

import dataclasses

import pytest

from counterpoise.core.policy.share import MIN_SHARE_OF_EQUAL
from counterpoise.core.settings import LoadSettings, RedisSettings, Settings, TimerSettings
from counterpoise.core.tally import Tally

from ..fakes.sync import Harness, MemoryStore

A, B = "sip:10.0.0.1:5060", "sip:10.0.0.2:5060"
TICK_MS = 200
S = Settings(
    redis=RedisSettings(publish_interval_ms=1000, node_ttl_ms=10_000, share_ttl_ms=1000),
    timers=TimerSettings(hold_queue_ms=500),
    load=LoadSettings(load_smoothing_tau_ms=1000),
)
"""What the share reads, pinned: a short smoothing so the rates settle within seconds."""


@dataclasses.dataclass
class Node:
    harness: Harness
    per_tick: dict[str, int]
    """Requests it completes at each proxy per tick (its callers' demand)."""

    def tick(self) -> None:
        for uri, n in self.per_tick.items():
            key = f"101 {uri}"
            before = self.harness.shared.tallies.get(key, Tally())
            self.harness.shared.tallies[key] = before + Tally(
                requests_ok=n, first_reply_ms_sum=n * 20, final_reply_ms_sum=n * 20
            )
        self.harness.tick(TICK_MS)


@pytest.fixture
def store() -> MemoryStore:
    pool = MemoryStore()
    pool.add(A)
    pool.add(B)
    return pool


def node(store: MemoryStore, name: str, per_tick: dict[str, int], late: Node | None = None) -> Node:
    """A node; ``late``: one already running, whose clock the new node's starts at."""
    harness = Harness(store, S, node=name)
    if late is not None:
        harness.clock.now = late.harness.clock.now
    return Node(harness, per_tick)


def run(nodes: list[Node], duration_ms: int) -> None:
    for _ in range(duration_ms // TICK_MS):
        for each in nodes:
            each.tick()


def test_a_node_alone_has_share_one_and_its_own_limits(store: MemoryStore):
    alone = node(store, "lb1", {A: 20, B: 10})
    run([alone], 20_000)
    loop = alone.harness.loop
    assert (loop.share.share, loop.share.nodes) == (1.0, 1)
    # 100 and 50 completed per second, 500 ms of queue: 50 and 25 in flight.
    assert loop.weights[A].inflight_limit == 50
    assert loop.weights[B].inflight_limit == 25


def test_two_nodes_divide_each_proxys_limit_by_their_demand(store: MemoryStore):
    # Each node carries 150/s but sends them to the proxies in opposite proportions.
    lb1 = node(store, "lb1", {A: 10, B: 20})
    lb2 = node(store, "lb2", {A: 20, B: 10})
    run([lb1, lb2], 20_000)
    for each in (lb1, lb2):
        loop = each.harness.loop
        assert loop.share.share == pytest.approx(0.5)
        assert loop.share.nodes == 2
        # A and B complete 150/s over both nodes: half of it is 75/s, 38 in 500 ms.
        assert loop.weights[A].inflight_limit == 38
        assert loop.weights[B].inflight_limit == 38
    table = {entry.uri: entry.inflight_limit for entry in lb1.harness.shared.tables[-1]}
    assert table == {A: 38, B: 38}
    record = store.weights["lb1"][A]
    assert (record["node_share"], record["nodes"], record["inflight_limit"]) == (0.5, 2, 38)


def test_a_joining_node_takes_its_share_within_a_few_ticks(store: MemoryStore):
    lb1 = node(store, "lb1", {A: 30})
    run([lb1], 10_000)
    lb2 = node(store, "lb2", {A: 30}, late=lb1)
    run([lb1, lb2], 3 * TICK_MS)
    assert lb1.harness.loop.share.nodes == 2
    assert lb2.harness.loop.share.nodes == 2
    # lb2 has no rate yet: the floor, not nothing.
    assert lb2.harness.loop.share.share >= 0.5 * MIN_SHARE_OF_EQUAL
    run([lb1, lb2], 20_000)
    assert lb1.harness.loop.share.share == pytest.approx(0.5, abs=0.01)
    assert any("nodes sharing the pool: lb1, lb2" in line for line in lb1.harness.logs)


def test_a_dead_nodes_share_returns_within_the_share_ttl(store: MemoryStore):
    lb1 = node(store, "lb1", {A: 30})
    lb2 = node(store, "lb2", {A: 30})
    run([lb1, lb2], 10_000)
    assert lb1.harness.loop.share.share == pytest.approx(0.5, abs=0.01)
    # lb2 stops ticking: its publication expires after share_ttl_ms (1 s), read next tick.
    run([lb1], S.redis.share_ttl_ms + 2 * TICK_MS)
    assert (lb1.harness.loop.share.share, lb1.harness.loop.share.nodes) == (1.0, 1)


def test_a_node_that_loses_the_store_keeps_its_last_peers(store: MemoryStore):
    lb1 = node(store, "lb1", {A: 10})
    lb2 = node(store, "lb2", {A: 30})
    run([lb1, lb2], 20_000)
    before = lb1.harness.loop.share.share
    assert before == pytest.approx(0.25, abs=0.01)
    store.fail()
    lb2.per_tick = {A: 10}  # what lb1 cannot see while the store is down
    run([lb1, lb2], 10_000)
    assert lb1.harness.loop.share.nodes == 2
    assert lb1.harness.loop.share.share == pytest.approx(before, abs=0.01)
    store.recover()
    run([lb1, lb2], 10_000)
    assert lb1.harness.loop.share.share == pytest.approx(0.5, abs=0.01)


def test_an_unusable_publication_is_left_out_and_logged_once(store: MemoryStore):
    lb1 = node(store, "lb1", {A: 10})
    lb2 = node(store, "lb2", {A: 30})
    run([lb1, lb2], 2_000)
    store.sends["lb2"] = (b"[not, json", store.sends["lb2"][1] + 60_000)
    run([lb1], 2_000)
    assert lb1.harness.loop.share.nodes == 1
    unusable = [line for line in lb1.harness.logs if "node lb2 sends is unusable" in line]
    assert len(unusable) == 1
