"""The benchmark's pool: a SIPp UAS behind three downstream Kamailio proxies of unequal
capacity, the same real processes the demo and the end-to-end tests use
(``counterpoise.testbed``), kept running across contenders so every contender faces the
very same proxies.

Capacity comes from sleeping workers (``cpdemo.delay_ms``), not from the two CPU cores.
"""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from harness import testbed

from counterpoise import processes

POOL_WORKERS = (("big", 4), ("medium", 2), ("small", 1))
"""Name and worker count of each proxy: capacities 4:2:1, as in the demo pool."""

BASE_DELAY_MS = 100
"""Sleep of every worker per initial INVITE: 100 ms gives 40, 20 and 10 calls/s (70 calls/s
in all). Twice the demo's 50 ms, so the offered load (49 calls/s at 70 %) leaves the two CPU
cores mostly idle: the proxies' sleeping, not the CPUs, is the bottleneck measured."""


@dataclasses.dataclass(frozen=True)
class Target:
    """One next hop of a balancer: its name in the report, SIP URI and capacity (calls/s)."""

    name: str
    uri: str
    capacity: float


@dataclasses.dataclass(frozen=True)
class InviteSample:
    """Cumulative new INVITE transactions each proxy had created at one moment."""

    t: float
    """Seconds since the run's start (monotonic clock)."""
    invites: dict[str, int | None]
    """Per proxy name; None when the proxy could not be asked (stopped, dead)."""


class Pool:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir / "pool"
        self.uas: processes.Process | None = None
        self.uas_uri = ""
        self.proxies: list[testbed.Downstream] = []
        self.lock = threading.Lock()
        """Held while the proxies are sampled or changed, so a sample never asks a proxy
        that is being stopped."""
        self.unreachable: set[str] = set()
        """Proxies stopped or killed on purpose: not queried (a SIGSTOPped Kamailio would
        leave kamcmd waiting)."""

    def start_uas(self) -> Pool:
        """Only the UAS (the overhead bench's one downstream)."""
        uas_port = processes.free_port()
        self.uas = testbed.start_uas(uas_port, self.run_dir)
        self.uas_uri = f"sip:127.0.0.1:{uas_port}"
        return self

    def start(self) -> Pool:
        self.start_uas()
        for name, workers in POOL_WORKERS:
            ds = testbed.Downstream(
                name, processes.free_port(), workers, self.uas_uri, self.run_dir, False
            )
            self.proxies.append(ds)
            ds.start().set_delay_ms(BASE_DELAY_MS)
        return self

    def stop(self) -> None:
        for ds in self.proxies:
            if ds.name in self.unreachable and ds.proc and ds.proc.alive():
                ds.proc.signal(signal.SIGCONT)
            ds.stop()
        if self.uas:
            self.uas.stop()

    def targets(self) -> list[Target]:
        return [Target(ds.name, ds.uri, self.capacities[ds.name]) for ds in self.proxies]

    def probe_watch(self) -> Callable[[], bool]:
        """A condition that becomes true once every proxy has received an OPTIONS probe
        after this call."""
        before = {ds.name: probes_received(ds) for ds in self.proxies}
        return lambda: all(probes_received(ds) > before[ds.name] for ds in self.proxies)

    def proxy(self, name: str) -> testbed.Downstream:
        return next(ds for ds in self.proxies if ds.name == name)

    @property
    def capacities(self) -> dict[str, float]:
        """Calls/s each proxy sustains at the base delay."""
        return {ds.name: ds.workers * 1000 / BASE_DELAY_MS for ds in self.proxies}

    @property
    def total_capacity(self) -> float:
        return sum(self.capacities.values())

    # --- events ----------------------------------------------------------------------------

    def set_delay(self, name: str, delay_ms: int) -> None:
        self.proxy(name).set_delay_ms(delay_ms)

    def stall(self, name: str) -> None:
        """Freeze every process of the proxy (SIGSTOP): it neither answers nor refuses."""
        ds = self.proxy(name)
        assert ds.proc
        with self.lock:
            self.unreachable.add(name)
            ds.proc.signal(signal.SIGSTOP)

    def resume(self, name: str) -> None:
        ds = self.proxy(name)
        assert ds.proc
        ds.proc.signal(signal.SIGCONT)
        self.unreachable.discard(name)

    def kill(self, name: str) -> None:
        with self.lock:
            self.unreachable.add(name)
            self.proxy(name).kill()

    def restart(self, name: str) -> None:
        """Start the killed proxy again on the same port, with the base delay."""
        ds = self.proxy(name)
        ds.ctl.unlink(missing_ok=True)
        ds.start().set_delay_ms(BASE_DELAY_MS)
        self.unreachable.discard(name)

    def reset(self) -> None:
        """Back to the base state between runs: every proxy running at the base delay."""
        for ds in self.proxies:
            if ds.name in self.unreachable:
                if ds.proc and ds.proc.alive():
                    self.resume(ds.name)
                else:
                    self.restart(ds.name)
            ds.set_delay_ms(BASE_DELAY_MS)

    # --- measurement -----------------------------------------------------------------------

    def sample(self, t0: float) -> InviteSample:
        invites: dict[str, int | None] = {}
        with self.lock:
            for ds in self.proxies:
                invites[ds.name] = None if ds.name in self.unreachable else new_invites(ds)
        return InviteSample(time.monotonic() - t0, invites)


def proxy_stats(ds: testbed.Downstream) -> dict[str, int] | None:
    """The proxy's statistics, or None when it does not answer on its control socket."""
    try:
        return testbed.statistics(ds.ctl, "all")
    except (RuntimeError, OSError, subprocess.TimeoutExpired):
        return None


def new_invites(ds: testbed.Downstream) -> int | None:
    """INVITEs the proxy has received (``core:rcv_requests_invite``), counted when a worker
    reads them. This includes the balancer's retransmissions of an INVITE that waits in a
    busy proxy's socket queue (no 100 Trying within 500 ms): they are load that proxy
    received. tm's transaction counters would leave them out, but Kamailio updates those
    in bursts, seconds late, which is useless for a share over time."""
    stats = proxy_stats(ds)
    return None if stats is None else stats.get("core:rcv_requests_invite", 0)


def probes_received(ds: testbed.Downstream) -> int:
    """OPTIONS requests the proxy has received (the balancers' keepalive probes)."""
    stats = proxy_stats(ds) or {}
    return stats.get("core:rcv_requests_options", 0)
