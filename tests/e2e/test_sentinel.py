"""Redis Sentinel (issue 11): one master, one replica, three sentinels (Debian's
``redis-sentinel``); calls at a steady rate through a balancer on a ``redis+sentinel://`` URL
while the master is killed, a second node on the same URL. Measured: calls lost (target 0),
when the sentinels name the new master and when each node and an agent write to it; after the
failover a ``proxy drain`` and a new registration reach both nodes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import testbed

from counterpoise import processes
from counterpoise.core.reports import decode
from counterpoise.store.client import connect

from ..redis_servers import SERVICE, SentinelSet
from .conftest import Bed, invite_counts, settled_count
from .test_location import USERS, Users, holders, invites

pytestmark = pytest.mark.e2e


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelSet]:
    group = SentinelSet(tmp_path / "sentinel")
    try:
        yield group
    finally:
        group.stop()


def test_balancers_follow_a_failover_without_losing_a_call(bed: Bed, sentinels: SentinelSet):
    bed.use_redis(sentinels.url)
    replica = connect(f"redis://127.0.0.1:{sentinels.replica}/0", 500)
    processes.wait_for(
        lambda: replica.info("replication")["master_link_status"] == "up", 10, "replica in sync"
    )
    a, b = bed.start_downstream("a"), bed.start_downstream("b")
    first_port = bed.start_balancer(name="lb1")
    nodes = [bed.settings.node.node_name()]
    bed.add_pool((a, 1), (b, 1))
    caller = bed.caller(calls=500, rate=25, hold_ms=100)  # through lb1, for 20 s
    bed.start_balancer(name="lb2")
    nodes.append(bed.settings.node.node_name())
    bed.adopt(testbed.start_agent(a, sentinels.url, []))
    processes.wait_for(lambda: min(invite_counts([a, b]).values()) >= 10, 20, "calls flowing")

    sentinel = connect(f"redis://127.0.0.1:{sentinels.sentinels[0]}", 500)
    sentinels.procs["master"].kill()
    killed_ms = time.time() * 1000
    processes.wait_for(
        lambda: sentinel.sentinel_get_master_addr_by_name(SERVICE)[1] == sentinels.replica,
        30,
        "the sentinels to name the new master",
    )
    switched_ms = time.time() * 1000
    followed_ms = []
    for node in nodes:  # a node publishes every second: its first write to the new master
        followed_ms.append(
            processes.wait_for(
                lambda n=node: (
                    (s := replica.zscore(f"{bed.settings.redis.key_prefix}nodes", n))
                    and s > killed_ms
                    and s
                ),
                30,
                f"{node} to publish to the new master",
            )
        )
    raw = connect(f"redis://127.0.0.1:{sentinels.replica}/0", 500, decode=False)
    report_key = f"{bed.settings.redis.key_prefix}report:{a.uri}"
    agent_ms = processes.wait_for(
        lambda: (
            (r := raw.get(report_key)) and (t := decode(r, 2**62).timestamp_ms) > killed_ms and t
        ),
        30,
        "the agent to report to the new master",
    )
    print(
        f"sentinels switched {switched_ms - killed_ms:.0f} ms after the kill; nodes published "
        f"to the new master {', '.join(f'{t - killed_ms:.0f}' for t in followed_ms)} ms after "
        f"it, the agent {agent_ms - killed_ms:.0f} ms"
    )

    drained = bed.cli("proxy", "drain", a.uri)  # the CLI finds the new master by itself
    assert drained.returncode == 0, drained.stderr
    at_drain = settled_count(lambda: a.counts()["invite"], 1.0, "new calls to drained a")
    result = caller.wait(120)
    print(f"calls through the failover: {result.successful} successful, {result.failed} failed")
    assert result.failed == 0, result.output[-2000:]
    assert a.counts()["invite"] == at_drain, "the drain did not reach the balancer within 1 s"

    # A registration through lb2 after the failover routes calls through lb1.
    assert bed.cli("proxy", "undrain", a.uri).returncode == 0
    # Until a node has seen the undrain, a user held by a goes by weight: to b.
    processes.wait_for(
        lambda: published_states(bed, nodes, a.uri) <= {"up", "slowstart"}, 10, "a back on both"
    )
    users = Users(bed, USERS)  # registers through lb2, the node started last
    users.register()
    records = holders(bed, USERS)
    assert set(records) == set(USERS)
    before = {ds.uri: invites(ds) for ds in (a, b)}
    bed.balancer_port = first_port
    call = users.call()
    assert (call.wait(1).successful, call.wait(1).failed) == (len(USERS), 0)
    per_proxy = {ds.uri: sum(1 for p in records.values() if p == ds.uri) for ds in (a, b)}
    assert {uri: invites(ds) - before[uri] for uri, ds in ((a.uri, a), (b.uri, b))} == per_proxy


def published_states(bed: Bed, nodes: list[str], uri: str) -> set[object]:
    """The state of proxy ``uri`` in each of ``nodes``' latest publication (None: not there)."""
    return {bed.rows_published(node).get(uri, {}).get("state") for node in nodes}
