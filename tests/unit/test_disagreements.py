"""`proxy list` names the proxies the balancer nodes see differently."""

from __future__ import annotations

from counterpoise.cli.table import disagreements


def row(uri: str, **views: tuple[str, float, float]) -> dict:
    per_node = {
        node: {"state": state, "weight": weight, "share": share}
        for node, (state, weight, share) in views.items()
    }
    return {"uri": uri, "per_node": per_node}


def test_nodes_that_agree_print_nothing() -> None:
    rows = [row("sip:a", n1=("up", 1.0, 0.5), n2=("up", 0.98, 0.52)), row("sip:b", n1=("up", 1, 1))]
    assert disagreements(rows) == []


def test_a_different_state_or_share_is_one_line_naming_each_node() -> None:
    rows = [
        row("sip:a", n1=("up", 1.0, 0.5), n2=("down", 0.0, 0.0)),
        row("sip:b", n1=("up", 1.0, 0.5), n2=("up", 0.6, 0.3)),
    ]
    assert disagreements(rows) == [
        "nodes disagree on sip:a: n1 up weight 1.000 share 50.0%, n2 down weight 0.000 share 0.0%",
        "nodes disagree on sip:b: n1 up weight 1.000 share 50.0%, n2 up weight 0.600 share 30.0%",
    ]
