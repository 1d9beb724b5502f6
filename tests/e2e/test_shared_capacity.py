"""Two balancer nodes on one Redis driven past the capacity of their one proxy: together they
keep its requests in flight within one node's limit, not twice it (docs/routing.md, "Several
nodes share the pool")."""

from __future__ import annotations

import math
import statistics
import threading
import time

import pytest

from counterpoise import processes

from .conftest import Bed

pytestmark = pytest.mark.e2e

WORKERS, DELAY_MS = 2, 100
CAPACITY_PER_S = WORKERS * 1000 / DELAY_MS
"""The proxy's capacity: 2 workers sleeping 100 ms per INVITE, 20 calls/s."""
OFFERED_PER_S_PER_NODE = 13
"""Each node's callers: 26 calls/s together, 1.3 times the proxy's capacity."""


def test_two_nodes_keep_one_proxys_requests_in_flight_within_its_limit(bed: Bed) -> None:
    a = bed.start_downstream("a", workers=WORKERS)
    a.set_delay_ms(DELAY_MS)
    nodes = []
    for name in ("lb1", "lb2"):
        # Shedding off (the default): the limits alone, holding every call, are what is
        # measured here (tests/e2e/test_shedding.py turns the excess away).
        bed.start_balancer(name=name, publish_interval_ms=200)
        nodes.append((bed.settings.node.node_name(), bed.balancer_port))
        if name == "lb1":
            bed.add_pool((a, 1))
    hold_queue_ms = bed.settings.timers.hold_queue_ms
    limit = math.ceil(CAPACITY_PER_S * hold_queue_ms / 1000)  # one node's, alone: 10
    processes.wait_for(
        lambda: all(
            a.uri in bed.store.node_weights(_now_ms(), 10_000).get(node, {}) for node, _ in nodes
        ),
        15,
        "both nodes to route to the proxy",
    )
    totals: list[int] = []
    shares: dict[str, float] = {}
    done = threading.Event()

    def sample() -> None:
        """The proxy's requests in flight: both nodes' latest published counts, summed."""
        while not done.wait(0.1):
            published = bed.store.node_weights(_now_ms(), 10_000)
            records = [published.get(node, {}).get(a.uri) for node, _ in nodes]
            if all(records):
                totals.append(sum(int(r["inflight"]) for r in records))
                shares.update(
                    {node: r["node_share"] for (node, _), r in zip(nodes, records, strict=True)}
                )

    sampler = threading.Thread(target=sample, daemon=True)
    callers = []
    for _, port in nodes:
        bed.balancer_port = port
        callers.append(bed.caller(calls=OFFERED_PER_S_PER_NODE * 12, rate=13, hold_ms=100))
    processes.wait_for(
        lambda: _pool_throughput_per_s(bed, a.uri, nodes) >= 0.8 * CAPACITY_PER_S,
        20,
        "both nodes to measure the proxy at capacity",
    )
    sampler.start()
    try:
        results = [caller.wait(90) for caller in callers]
    finally:
        done.set()
        sampler.join()
    loaded = totals[: len(totals) * 2 // 3]  # while both callers still offered 26/s
    p90 = statistics.quantiles(loaded, n=10)[-1]
    print(f"in flight at the proxy: p90 {p90}, max {max(loaded)}, one node's limit {limit}; "
          f"shares {shares}; failed {[r.failed for r in results]}")  # fmt: skip
    assert all(0.3 <= share <= 0.7 for share in shares.values()), shares
    # Twice the limit is what two nodes unaware of each other would allow.
    assert p90 <= limit * 1.5, (p90, limit)
    assert [r.failed for r in results] == [0, 0], [r.output[-1000:] for r in results]


def _pool_throughput_per_s(bed: Bed, uri: str, nodes: list[tuple[str, int]]) -> float:
    """What the nodes measure the proxy to complete per second, summed."""
    published = bed.store.node_weights(_now_ms(), 10_000)
    records = [published.get(node, {}).get(uri) or {} for node, _ in nodes]
    return sum(float(r.get("throughput_per_s", 0.0)) for r in records)


def _now_ms() -> int:
    return int(time.time() * 1000)
