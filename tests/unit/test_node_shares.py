"""`proxy list` shows each node's share of the pool and its in-flight limits."""

from __future__ import annotations

from counterpoise.cli.table import node_shares


def test_one_line_per_node_with_its_share_and_limits() -> None:
    rows = [
        {
            "uri": "sip:a",
            "per_node": {
                "n1": {"node_share": 0.25, "nodes": 2, "inflight_limit": 10},
                "n2": {"node_share": 0.75, "nodes": 2, "inflight_limit": 30},
            },
        },
        {
            "uri": "sip:b",
            "per_node": {
                "n1": {"node_share": 0.25, "nodes": 2, "inflight_limit": 2},
                "n2": {"node_share": 0.75, "nodes": 2, "inflight_limit": 5},
            },
        },
    ]
    assert node_shares(rows) == [
        "node n1: 25.0% of the pool (2 nodes), in-flight limits sip:a 10, sip:b 2",
        "node n2: 75.0% of the pool (2 nodes), in-flight limits sip:a 30, sip:b 5",
    ]


def test_a_node_that_published_no_share_is_left_out() -> None:
    rows = [{"uri": "sip:a", "per_node": {"n1": {"state": "up", "inflight_limit": 3}}}]
    assert node_shares(rows) == []
