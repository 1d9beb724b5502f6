"""Calls ringing through the active node of a pair when it dies, cancelled by their callers
through the survivor: the CANCEL, and the ACK of the 487 it brings, reach a node that never
saw their INVITE (``Balancer.forward_orphan``). The e2e test asserts on what ``run`` returns.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

from counterpoise import processes
from counterpoise.core.settings import Settings
from harness import testbed
from harness.failover import Published, calls_placed, start_pool
from harness.pair import Pair

LAN_PREFIX = "10.231.78"
"""Not the pair test's LAN: both may run on one machine at once."""
PROXIES = 2
CALLS = 6
RATE_PER_S = 10
RING_MS = 5000
"""How long each caller lets its call ring before it cancels: the INVITEs all reach the
proxies through the first node, the address has moved (0.2 s VRRP: under 1 s) when the first
CANCEL leaves."""


@dataclasses.dataclass
class CancelRun:
    successful: int
    failed: int
    error_codes: dict[int, int]
    invites_at_proxies: int
    """INVITE transactions the proxies got of these calls (each call once: through node_a)."""
    survivor_edge: dict[str, int]
    """The survivor's edge counters: ``orphan_forwarded``, the CANCELs and the 487s' ACKs it
    sent on; ``stray_forwarded``, the replies to them and to the dead node's INVITEs."""
    sipp_tail: str


def run(run_dir: Path, timing: str = "subsecond") -> CancelRun:
    """``CALLS`` calls ringing through node_a, node_a dies, their callers cancel them through
    node_b; every process, namespace and link is gone when it returns or raises."""
    pair = Pair(run_dir / "pair", timing, lan_prefix=LAN_PREFIX)
    with contextlib.ExitStack() as stops:
        stops.callback(pair.close)
        pair.open()
        settings = Settings.of(redis_url=pair.redis_url)
        proxies = start_pool(pair, run_dir, PROXIES, "uas-ringing.xml", stops)
        for name in ("node_a", "node_b"):
            pair.start_node(name, settings)
        pair.wait_holder("node_a", 15)
        Published(pair.redis_url, settings).enter_pool(
            [(ds.uri, 1.0) for ds in proxies], "pair-node_a"
        )
        caller = testbed.Caller(
            f"{pair.vip}:{pair.sip_port}", run_dir, CALLS, RATE_PER_S, RING_MS,
            scenario="uac-cancel.xml", local_ip=pair.lan.address,
        )  # fmt: skip
        stops.callback(caller.stop)

        def invites() -> int:
            return sum(calls_placed(proxies, caller.proc.pid).values())

        processes.wait_for(lambda: invites() == CALLS, 10, "every call ringing through node_a")
        pair.kill("node_a")
        pair.wait_holder("node_b", 10)
        result = caller.wait(RING_MS / 1000 + 60)
        node_b_ctl = processes.ctl_socket(pair.nodes["node_b"].run_dir)
        return CancelRun(
            successful=result.successful,
            failed=result.failed,
            error_codes=caller.error_codes(),
            invites_at_proxies=invites(),
            survivor_edge=testbed.counters(node_b_ctl, "cpedge"),
            sipp_tail=result.output[-3000:],
        )
