"""Two balancer nodes on one Redis with SIPp calls through both (issue 11): the same
base-weight split on each, and a drain from the CLI stops new calls on both within a second.
(A user registered through one node and called through the other:
``test_location.py::test_records_are_shared_by_every_balancer_node``.)"""

from __future__ import annotations

import pytest

from counterpoise import processes

from .conftest import Bed, settled_count

pytestmark = pytest.mark.e2e


def node_requests(bed: Bed, node: str) -> dict[str, int]:
    """Requests each proxy got from ``node``, as that node published them."""
    return {
        uri: record["totals"]["requests_ok"] + record["totals"]["requests_failed"]
        for uri, record in bed.rows_published(node).items()
    }


def test_two_nodes_split_alike_and_a_drain_reaches_both(bed: Bed) -> None:
    a, b = bed.start_downstream("a"), bed.start_downstream("b")
    bed.start_balancer(name="lb1")
    first = bed.settings.node.node_name()
    bed.add_pool((a, 3), (b, 1))
    callers = [bed.caller(calls=900, rate=30, hold_ms=100)]
    bed.start_balancer(name="lb2")
    second = bed.settings.node.node_name()
    processes.wait_for(
        lambda: all(
            bed.rows_published().get(ds.uri, {}).get("state") in ("up", "slowstart")
            for ds in (a, b)
        ),
        15,
        "the second node to route to the pool",
    )
    callers.append(bed.caller(calls=900, rate=30, hold_ms=100))
    processes.wait_for(
        lambda: all(sum(node_requests(bed, n).values()) >= 400 for n in (first, second)),
        60,
        "400 calls through each node",
    )
    for node in (first, second):
        counts = node_requests(bed, node)
        share = counts[a.uri] / (counts[a.uri] + counts[b.uri])
        print(f"node {node}: {counts}, share of a {share:.3f}")
        # As in the single-node 3:1 test: 0.07 is about 3 binomial sd at 400 calls.
        assert share == pytest.approx(0.75, abs=0.07), (node, counts)

    drained = bed.cli("proxy", "drain", a.uri)
    assert drained.returncode == 0, drained.stderr
    at_drain = settled_count(lambda: a.counts()["invite"], 1.0, "new calls to drained a")
    results = [caller.wait(120) for caller in callers]

    assert [r.failed for r in results] == [0, 0], [r.output[-1000:] for r in results]
    assert a.counts()["invite"] == at_drain, "a node sent new calls to a proxy drained 1 s ago"
    assert all(node_requests(bed, n)[b.uri] > 100 for n in (first, second))
