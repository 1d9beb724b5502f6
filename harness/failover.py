"""The node pair's failover run, shared by its end-to-end test and its benchmark
(``python -m bench --pair``): SIPp calls the floating address at a steady rate with long
calls, the active node's host dies mid-run, the standby takes the address over, the node
comes back and takes it back. What it measures is returned; the test asserts on it, the
benchmark reports it, beside the same run with Kamailio's dispatcher on the nodes
(``harness.pair_dispatcher``).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import random
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from counterpoise import clock, processes
from counterpoise.core.settings import Settings
from counterpoise.store.client import connect
from counterpoise.store.pool import PoolStore
from harness import pair_dispatcher, testbed
from harness.pair import Node, Pair

POOL = (1.0, 1.0, 2.0)
"""The proxies' base weights."""

PUBLISHED_ANY_AGE_MS = 3_600_000
"""A dead node's last published record is read too: it is the split it routed with."""

PINNED_USER = "pinned"
"""A user the operator pinned to the first proxy (``counterpoise location pin``)."""
PINNED_CALLS = 10

COUNTERPOISE, DISPATCHER = "counterpoise", "dispatcher"
BALANCERS = (COUNTERPOISE, DISPATCHER)
"""What runs on the nodes: Counterpoise, or dispatcher (no shared state, no location
routing: no weights published and no pinned user)."""


@dataclasses.dataclass(frozen=True)
class Schedule:
    rate_per_s: float = 30
    hold_ms: int = 20_000
    kill_at_s: float = 15.0
    """Mid-run, with every call placed so far still established."""
    revive_at_s: float = 28.0
    run_s: float = 45.0

    @property
    def calls(self) -> int:
        return round(self.rate_per_s * self.run_s)


@dataclasses.dataclass
class Failover:
    balancer: str
    timing: str
    schedule: Schedule
    move_s: float
    """From the kill until the standby holds the address."""
    outage_s: float
    """From the kill until the standby received its first INVITE."""
    back_s: float
    """From the node's restart until it holds the address again."""
    base_shares: dict[str, float]
    weights_before: dict[str, float]
    """The dead node's weight shares, as it last published them (none with dispatcher)."""
    weights_after: dict[str, float]
    """The survivor's, before the node came back."""
    split_before: dict[str, float]
    """The calls the dead node placed on each proxy, as shares (with dispatcher, which
    publishes nothing: the calls the proxies got before the kill)."""
    split_after: dict[str, float]
    """The calls the survivor placed while it held the address, as shares (with dispatcher:
    the calls the proxies got from the kill until the node came back)."""
    successful: int
    failed: int
    error_codes: dict[int, int]
    placed_twice: dict[str, int]
    """Call-IDs whose INVITE reached the proxies as more than one transaction."""
    placed: int
    """Distinct Call-IDs the proxies saw."""
    pinned_proxy: str
    pinned_before: dict[str, int]
    """Where the pinned user's calls went through the node that died, per proxy."""
    pinned_after: dict[str, int]
    """... and through the survivor."""
    sipp_tail: str

    def summary(self) -> dict:
        record = dataclasses.asdict(self)
        record.pop("sipp_tail")
        return record


def _shares(counts: Mapping[str, float]) -> dict[str, float]:
    total = sum(counts.values())
    return {uri: count / total if total else 0.0 for uri, count in counts.items()}


def split_apart(run: Failover) -> float:
    """How far apart the survivor's split and the dead node's are: the largest difference
    of one proxy's share, in points."""
    uris = run.split_before.keys() | run.split_after.keys()
    return max(
        (abs(run.split_after.get(uri, 0.0) - run.split_before.get(uri, 0.0)) * 100 for uri in uris),
        default=0.0,
    )


def calls_placed(proxies: list[testbed.Downstream], pid: int) -> dict[str, int]:
    """The calls of SIPp ``pid`` each proxy has had so far (its Call-IDs carry the pid)."""
    marker = f"-{pid}@"
    return {ds.uri: sum(marker in cid for cid in ds.invite_call_ids()) for ds in proxies}


class Published:
    def __init__(self, redis_url: str, settings: Settings) -> None:
        self.store = PoolStore(connect(redis_url, 1000), settings.redis.key_prefix)

    def records(self, node: str) -> dict[str, dict]:
        return self.store.node_weights(clock.wall_ms(), PUBLISHED_ANY_AGE_MS).get(node, {})

    def routed(self, node: str) -> dict[str, int]:
        return {uri: r["totals"]["requests_ok"] for uri, r in self.records(node).items()}

    def weights(self, node: str) -> dict[str, float]:
        return {uri: r["share"] for uri, r in self.records(node).items()}

    def enter_pool(self, weighted: list[tuple[str, float]], node: str) -> None:
        """The operator adds each proxy with its base weight; until ``node`` has published
        every one of them up (or slowly starting)."""
        for uri, weight in weighted:
            self.store.add(uri, weight)

        def usable() -> bool:
            records = self.records(node)
            return all(
                records.get(uri, {}).get("state") in ("up", "slowstart") for uri, _ in weighted
            )

        processes.wait_for(usable, 15, f"the pool up at {node}")


def invites_at(pair: Pair, name: str) -> int:
    """INVITEs node ``name`` has received (retransmissions too)."""
    ctl = processes.ctl_socket(pair.nodes[name].run_dir)
    return testbed.statistics(ctl, "core:").get("core:rcv_requests_invite", 0)


def call_pinned(pair: Pair, run_dir: Path, proxies: list[testbed.Downstream]) -> dict[str, int]:
    """``PINNED_CALLS`` short calls to the pinned user through the floating address: how many
    each proxy got (SIPp's Call-IDs carry its pid)."""
    caller = testbed.Caller(
        f"{pair.vip}:{pair.sip_port}", run_dir, PINNED_CALLS, 10, 100,
        extra=("-s", PINNED_USER), local_ip=pair.lan.address,
    )  # fmt: skip
    result = caller.wait(30)
    if result.failed or result.successful != PINNED_CALLS:
        raise AssertionError(f"calls to the pinned user failed: {result.output[-2000:]}")
    counts = calls_placed(proxies, caller.proc.pid)
    return {uri: count for uri, count in counts.items() if count}


def pin(redis_url: str, name: str, proxy: str) -> None:
    """The operator's command: ``counterpoise location pin``."""
    subprocess.run(
        [sys.executable, "-m", "counterpoise.cli", "location", "pin", name, proxy,
         "--redis", redis_url],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip


def start_pool(
    pair: Pair, run_dir: Path, size: int, uas_scenario: str, stops: contextlib.ExitStack
) -> list[testbed.Downstream]:
    """``size`` proxies on the pair's LAN address in front of one SIPp UAS playing
    ``uas_scenario``, each logging the Call-IDs of its INVITEs; stopped by ``stops``."""
    uas_port = processes.free_port()
    stops.callback(testbed.start_uas(uas_port, run_dir, uas_scenario).stop)
    proxies = []
    for n in range(size):
        ds = testbed.Downstream(
            f"p{n + 1}", processes.free_port(), 2, f"sip:127.0.0.1:{uas_port}", run_dir,
            registrar=False, host=pair.lan.address, call_log=True,
        )  # fmt: skip
        stops.callback(ds.stop)
        proxies.append(ds.start())
    return proxies


def run(
    run_dir: Path,
    timing: str = "1s",
    schedule: Schedule = Schedule(),
    balancer: str = COUNTERPOISE,
) -> Failover:
    """One failover run of ``balancer`` (one of ``BALANCERS``) on the nodes; every process,
    namespace and link is gone when it returns or raises."""
    counterpoise = balancer == COUNTERPOISE
    pair = Pair(run_dir / "pair", timing)
    with contextlib.ExitStack() as stops:
        stops.callback(pair.close)
        pair.open()
        settings = Settings.of(redis_url=pair.redis_url)
        proxies = start_pool(pair, run_dir, len(POOL), "uas.xml", stops)
        weighted = [(ds.uri, weight) for ds, weight in zip(proxies, POOL, strict=True)]

        def start(name: str) -> Node:
            if counterpoise:
                return pair.start_node(name, settings)
            return pair_dispatcher.start_node(pair, name, weighted)

        for name in ("node_a", "node_b"):
            start(name)
        pair.wait_holder("node_a", 15)
        published = Published(pair.redis_url, settings)
        pinned_before: dict[str, int] = {}
        if counterpoise:
            published.enter_pool(weighted, "pair-node_a")
            pin(pair.redis_url, f"{PINNED_USER}@{pair.vip}", proxies[0].uri)
            pinned_before = call_pinned(pair, run_dir, proxies)
        start_s = clock.monotonic_s()
        caller = testbed.Caller(
            f"{pair.vip}:{pair.sip_port}", run_dir, schedule.calls, schedule.rate_per_s,
            schedule.hold_ms, local_ip=pair.lan.address,
        )  # fmt: skip
        stops.callback(caller.stop)
        # At a random point between two calls, as a host dies. At kill_at_s sharp, SIPp's
        # schedule and this one lined up (the link cut within 2.2 ms of a call's INVITE in
        # each of 5 runs sniffed), and so hit the fraction of a millisecond between a relay
        # and its 100 Trying, where a death places the call twice, far more often than a
        # random death does (docs/deploying.md).
        kill_s = schedule.kill_at_s + random.uniform(0, 1 / schedule.rate_per_s)
        clock.sleep_s(kill_s - (clock.monotonic_s() - start_s))  # the schedule
        weights_before = published.weights("pair-node_a")
        split_before = _shares(published.routed("pair-node_a"))
        routed_by_b = published.routed("pair-node_b")
        placed_before = calls_placed(proxies, caller.proc.pid)

        invites_before = invites_at(pair, "node_b")
        killed_s = clock.monotonic_s()  # the link goes first: the host is gone from here on
        pair.kill("node_a")
        pair.wait_holder("node_b", 10)
        move_s = clock.monotonic_s() - killed_s
        processes.wait_for(
            lambda: invites_at(pair, "node_b") > invites_before, 10, "an INVITE at node_b", 0.01
        )
        outage_s = clock.monotonic_s() - killed_s
        pinned_after = call_pinned(pair, run_dir, proxies) if counterpoise else {}

        clock.sleep_s(schedule.revive_at_s - (clock.monotonic_s() - start_s))
        weights_after = published.weights("pair-node_b")
        by_b = published.routed("pair-node_b")
        split_after = _shares({uri: by_b[uri] - routed_by_b.get(uri, 0) for uri in by_b})
        if not counterpoise:
            placed_after = calls_placed(proxies, caller.proc.pid)
            split_before = _shares(placed_before)
            split_after = _shares(
                {uri: placed_after[uri] - placed_before[uri] for uri in placed_after}
            )
        revived_s = clock.monotonic_s()
        pair.revive("node_a", start)
        pair.wait_holder("node_a", 15)
        back_s = clock.monotonic_s() - revived_s

        result = caller.wait(schedule.run_s + schedule.hold_ms / 1000 + 60)
        placed = collections.Counter(
            cid for ds in proxies for cid in ds.invite_call_ids() if f"-{caller.proc.pid}@" in cid
        )
        return Failover(
            balancer=balancer,
            timing=timing,
            schedule=schedule,
            move_s=move_s,
            outage_s=outage_s,
            back_s=back_s,
            base_shares=_shares(dict(weighted)),
            weights_before=weights_before,
            weights_after=weights_after,
            split_before=split_before,
            split_after=split_after,
            successful=result.successful,
            failed=result.failed,
            error_codes=caller.error_codes(),
            placed_twice={cid: n for cid, n in placed.items() if n > 1},
            placed=len(placed),
            pinned_proxy=proxies[0].uri,
            pinned_before=pinned_before,
            pinned_after=pinned_after,
            sipp_tail=result.output[-3000:],
        )
