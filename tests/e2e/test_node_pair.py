"""A node pair behind one floating address (issue 28): two balancer nodes, each in its own
network namespace with its own keepalived (unicast VRRP, ``deploy/keepalived/``), one Redis,
three proxies; SIPp calls the floating address. The active node's host dies mid-run (its link
cut, its Kamailio and keepalived SIGKILLed), the standby takes the address over, then the
node comes back and takes it back, and no call is lost on the way (``harness/pair.py``)."""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import testbed, vrrp
from harness.pair import NODES, Pair

from counterpoise import clock, processes
from counterpoise.core.settings import Settings

from .conftest import Bed

pytestmark = pytest.mark.e2e

T1_S = 0.5
"""SIP's retransmission interval: a request sent into the outage is sent again within it
(SIPp's first retransmission) once the address has moved."""

CALL_RATE_PER_S = 30
HOLD_MS = 20_000
KILL_AT_S = 15.0
"""Mid-run, with every call placed so far still established (held 20 s)."""
REVIVE_AT_S = 28.0
RUN_S = 45


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    pair = Pair(tmp_path / "pair")
    try:
        yield pair.open()
    finally:
        pair.close()
        assert pair.lan.leftovers() == []


@pytest.fixture
def pair_bed(pair: Pair, tmp_path: Path) -> Iterator[Bed]:
    bed = Bed(tmp_path, pair.redis_url)
    with contextlib.closing(bed):
        yield bed


def test_the_shipped_keepalived_configs_pass_keepalived_config_test(pair: Pair) -> None:
    for name in NODES:
        node = pair.nodes[name]
        for timing in vrrp.TIMINGS:
            pair.timing = timing
            config = pair.keepalived_config(name)
            tested = vrrp.config_test(node.host, config, name)
            assert tested.returncode == 0, (timing, name, tested.stderr)
            # The check used, not a bare keyword: the address and port of this node.
            assert "WARNING" not in tested.stderr, tested.stderr


class BrokenVrrpPair(Pair):
    """A pair whose keepalived names an interface its hosts lack."""

    def keepalived_config(self, name: str) -> Path:
        a, b = (self.nodes[n].host.address for n in NODES)
        parameters = {"IFACE": "nosuch0", "VIP": self.vip, "NODE_A": a, "NODE_B": b}
        return vrrp.render(self.nodes[name].run_dir, parameters, self.timing)


def test_a_failed_start_leaves_no_process_namespace_or_link(tmp_path: Path) -> None:
    pair = BrokenVrrpPair(tmp_path / "pair")
    try:
        pair.open()
        settings = Settings.of(redis_url=pair.redis_url)
        with pytest.raises(processes.StartError, match="config-test"):
            pair.start_node("node_a", settings)
        started = [pair.nodes["node_a"].kamailio, pair.redis]
    finally:
        pair.close()
    assert pair.lan.leftovers() == []
    assert all(proc is not None and not proc.alive() for proc in started)


def shares(counts: dict[str, int]) -> dict[str, float]:
    total = sum(counts.values())
    return {uri: count / total for uri, count in counts.items()}


def routed(bed: Bed, node: str) -> dict[str, int]:
    """Calls ``node`` placed on each proxy, as it published them."""
    published = bed.store.node_weights(clock.wall_ms(), 3_600_000)
    return {uri: r["totals"]["requests_ok"] for uri, r in published.get(node, {}).items()}


def weight_shares(bed: Bed, node: str) -> dict[str, float]:
    published = bed.store.node_weights(clock.wall_ms(), 3_600_000)
    return {uri: record["share"] for uri, record in published.get(node, {}).items()}


def invites_at(pair: Pair, name: str) -> int:
    """INVITEs node ``name`` has received (retransmissions too)."""
    ctl = processes.ctl_socket(pair.nodes[name].run_dir)
    return testbed.statistics(ctl, "core:").get("core:rcv_requests_invite", 0)


def test_the_standby_takes_over_a_dead_node_and_gives_it_back_without_losing_a_call(
    pair: Pair, pair_bed: Bed
) -> None:
    bed = pair_bed
    proxies = [
        bed.start_downstream(f"p{n}", host=pair.lan.address, call_log=True) for n in (1, 2, 3)
    ]
    for name in NODES:
        pair.start_node(name, bed.settings)
    pair.wait_holder("node_a", 15)
    bed.add_pool((proxies[0], 1), (proxies[1], 1), (proxies[2], 2))
    bed.balancer_port = pair.sip_port
    start_s = clock.monotonic_s()
    caller = bed.caller(
        calls=CALL_RATE_PER_S * RUN_S,
        rate=CALL_RATE_PER_S,
        hold_ms=HOLD_MS,
        host=pair.vip,
        local_ip=pair.lan.address,
    )
    clock.sleep_s(KILL_AT_S - (clock.monotonic_s() - start_s))  # the run's schedule
    weights_before = weight_shares(bed, "pair-node_a")
    split_before = shares(routed(bed, "pair-node_a"))
    routed_by_b = routed(bed, "pair-node_b")

    invites_before = invites_at(pair, "node_b")
    pair.kill("node_a")
    killed_s = clock.monotonic_s()
    move_s = pair.wait_holder("node_b", 10)
    processes.wait_for(
        lambda: invites_at(pair, "node_b") > invites_before, 10, "an INVITE at node_b", 0.01
    )
    outage_s = clock.monotonic_s() - killed_s  # until the survivor got its first call
    print(f"address moved {move_s:.2f} s after the kill; new calls again after {outage_s:.2f} s")
    # VRRP's master-down interval at advert_int 1 s: 3 s plus the backup's skew (0.6 s).
    assert move_s <= 3.6 + T1_S, move_s
    assert outage_s <= move_s + T1_S, (outage_s, move_s)

    clock.sleep_s(REVIVE_AT_S - (clock.monotonic_s() - start_s))
    weights_after = weight_shares(bed, "pair-node_b")
    by_b = routed(bed, "pair-node_b")
    split_after = shares({uri: by_b[uri] - routed_by_b.get(uri, 0) for uri in by_b})
    print(f"weights {weights_before} -> {weights_after}; split {split_before} -> {split_after}")
    for ds, base_share in zip(proxies, (0.25, 0.25, 0.5), strict=True):
        assert weights_after[ds.uri] == pytest.approx(weights_before[ds.uri], abs=0.05)
        # About 3 binomial sd at the calls each node placed (~400).
        assert split_before[ds.uri] == pytest.approx(base_share, abs=0.07), split_before
        assert split_after[ds.uri] == pytest.approx(base_share, abs=0.07), split_after

    pair.revive("node_a", bed.settings)
    back_s = pair.wait_holder("node_a", 15)
    print(f"node_a took the address back {back_s:.2f} s after it started")

    result = caller.wait(RUN_S + HOLD_MS / 1000 + 60)
    placed = collections.Counter(cid for ds in proxies for cid in ds.invite_call_ids())
    twice = {cid: n for cid, n in placed.items() if n > 1}
    assert (result.successful, result.failed) == (CALL_RATE_PER_S * RUN_S, 0), (
        caller.error_codes(),
        result.output[-3000:],
    )
    assert twice == {}, twice
    assert len(placed) == CALL_RATE_PER_S * RUN_S
