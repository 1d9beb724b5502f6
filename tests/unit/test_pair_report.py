"""The pair benchmark's pure parts: the dispatcher list of the comparison and how far apart
the survivor's split is from the dead node's."""

from __future__ import annotations

import pytest
from harness import failover, pair_dispatcher


def test_each_dispatcher_node_lists_the_pool_with_its_base_weights_in_percent():
    proxies = [("sip:10.0.0.1:5060", 1.0), ("sip:10.0.0.2:5060", 1.0), ("sip:10.0.0.3:5060", 2.0)]
    assert pair_dispatcher.dispatcher_list(proxies) == (
        "1 sip:10.0.0.1:5060 0 0 weight=25\n"
        "1 sip:10.0.0.2:5060 0 0 weight=25\n"
        "1 sip:10.0.0.3:5060 0 0 weight=50\n"
    )


def run_with(before: dict[str, float], after: dict[str, float]) -> failover.Failover:
    return failover.Failover(
        balancer=failover.DISPATCHER, timing="1s", schedule=failover.Schedule(),
        move_s=3.5, outage_s=3.6, back_s=3.5, base_shares={}, weights_before={},
        weights_after={}, split_before=before, split_after=after, successful=1, failed=0,
        error_codes={}, placed_twice={}, placed=1, pinned_proxy="", pinned_before={},
        pinned_after={}, sipp_tail="",
    )  # fmt: skip


def test_the_splits_are_as_far_apart_as_the_proxy_whose_share_moved_most():
    before = {"a": 0.25, "b": 0.25, "c": 0.50}
    assert failover.split_apart(run_with(before, {"a": 0.20, "b": 0.28, "c": 0.52})) == (
        pytest.approx(5.0)
    )
    assert failover.split_apart(run_with(before, {"a": 0.25, "b": 0.75})) == pytest.approx(50.0)
    assert failover.split_apart(run_with({}, {})) == 0.0
