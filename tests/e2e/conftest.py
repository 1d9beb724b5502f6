"""Fixtures for end-to-end tests: real Redis, real Kamailio (balancer and downstream
proxies), real SIPp, on free local ports, all stopped when the test ends, pass or fail."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import testbed

from counterpoise import processes
from counterpoise.cli import table
from counterpoise.core.settings import Settings
from counterpoise.store.client import connect
from counterpoise.store.pool import PoolStore


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = processes.free_port()
    proc = processes.start_redis(port, tmp_path_factory.mktemp("redis"))
    yield port
    proc.stop()


class Bed:
    """One test's processes and the handles to drive them."""

    def __init__(self, run_dir: Path, redis_url: str) -> None:
        self.run_dir = run_dir
        self.use_redis(redis_url)
        self._procs: list[processes.Process] = []
        self._downstreams: list[testbed.Downstream] = []
        self._callers: list[testbed.Caller] = []
        self.balancer_port = 0
        self.uas_uri = ""

    def use_redis(self, redis_url: str) -> None:
        """Point the balancer (started after this call), the store and the CLI at a Redis."""
        self.redis_url = redis_url
        self.settings = Settings.of(redis_url=redis_url)
        self.store = PoolStore(connect(redis_url, 1000), self.settings.redis.key_prefix)

    # --- processes -------------------------------------------------------------------------

    def start_uas(
        self, port: int | None = None, scenario: str = "uas.xml", ring_ms: int = 0
    ) -> str:
        """A SIPp UAS; on ``port`` to answer for users registered with that Contact port;
        ``scenario`` another one of ``sipp-scenarios/``; its phone rings ``ring_ms``."""
        port = port or processes.free_port()
        self._procs.append(testbed.start_uas(port, self.run_dir, scenario, ring_ms))
        uri = f"sip:127.0.0.1:{port}"
        self.uas_uri = self.uas_uri or uri
        return uri

    def adopt(self, proc: processes.Process) -> None:
        """Stop ``proc`` with the rest when the test ends."""
        self._procs.append(proc)

    def start_downstream(
        self,
        name: str,
        workers: int = 2,
        port: int | None = None,
        registrar: bool = False,
        **transport: object,
    ) -> testbed.Downstream:
        """``transport``: ``transport="tcp"`` or ``"tls"`` (with ``tls=(cert, key)``)."""
        if not self.uas_uri:
            self.start_uas()
        ds = testbed.Downstream(
            name,
            port or processes.free_port(),
            workers,
            self.uas_uri,
            self.run_dir,
            registrar,
            **transport,  # type: ignore[arg-type]
        )
        self._downstreams.append(ds)
        return ds.start()

    def start_balancer(
        self,
        workers: int = 3,
        name: str = "balancer",
        listen: str = "udp:127.0.0.1:{port}",
        **overrides: object,
    ) -> int:
        """Start a balancer node (another ``name`` for a second node on the same Redis) on the
        sockets ``listen`` (``{port}``: a free port); the callers made after it call it."""
        self.balancer_port = processes.free_port()
        self.settings = self.settings.with_values(
            node_id=f"test:{self.balancer_port}",
            listen=listen.format(port=self.balancer_port),
            workers=workers,
            **overrides,
        )
        proc = processes.start_balancer(
            self.settings, self.run_dir / name, log_path=self.run_dir / f"{name}.log"
        )
        self._procs.append(proc)
        return self.balancer_port

    def caller(
        self, calls: int, rate: float, hold_ms: int = 200, host: str = "127.0.0.1", **kw: object
    ) -> testbed.Caller:
        caller = testbed.Caller(
            f"{host}:{self.balancer_port}", self.run_dir, calls, rate, hold_ms, **kw
        )
        self._callers.append(caller)
        return caller

    def caller_to(
        self, ds: testbed.Downstream, calls: int, rate: float, hold_ms: int = 200
    ) -> testbed.Caller:
        """A caller straight to ``ds``, past the balancer: a proxy made busy by traffic the
        balancer never sees (another balancer's, a quiet night's on this one)."""
        caller = testbed.Caller(f"127.0.0.1:{ds.port}", self.run_dir, calls, rate, hold_ms)
        self._callers.append(caller)
        return caller

    def close(self) -> None:
        """Stop the callers, then the downstreams, then the other processes, newest first;
        every stop runs even if one before it raised."""
        with contextlib.ExitStack() as stops:  # runs its callbacks last in, first out
            for proc in self._procs:
                stops.callback(proc.stop)
            for stoppable in [*self._downstreams, *self._callers]:
                stops.callback(stoppable.stop)

    def received_requests(self, name: str = "balancer") -> int:
        """Requests a balancer has read and parsed (Kamailio's ``core:rcv_requests``)."""
        stats = testbed.statistics(processes.ctl_socket(self.run_dir / name), "core:")
        return stats.get("core:rcv_requests", 0)

    def counters(self, table: str, name: str = "balancer") -> dict[str, int]:
        """A balancer's per-process counters (``cploc``, ``cpedge``) summed over processes."""
        return testbed.counters(processes.ctl_socket(self.run_dir / name), table)

    # --- the pool as Redis shows it -------------------------------------------------------

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """Run the real `counterpoise` command against this test's Redis."""
        return subprocess.run(
            [sys.executable, "-m", "counterpoise.cli", *args, "--redis", self.redis_url],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def rows(self) -> dict[str, dict]:
        now_ms = int(time.time() * 1000)
        return {row["uri"]: row for row in table.pool_rows(self.store, self.settings, now_ms)}

    def rows_published(self, node: str = "") -> dict[str, dict]:
        """A balancer's own record of each proxy (``cp:weights:<node>``): node ``node``'s, by
        default the one started last."""
        now_ms = int(time.time() * 1000)
        published = self.store.node_weights(now_ms, self.settings.redis.node_ttl_ms)
        return published.get(node or self.settings.node.node_name(), {})

    def log_lines(self, name: str = "balancer") -> list[str]:
        """What the balancer node ``name`` has logged so far (its sync loop journals every
        proxy's state change there)."""
        return (self.run_dir / f"{name}.log").read_text(errors="replace").splitlines()

    def wait_state(self, uri: str, states: tuple[str, ...], timeout_s: float = 15.0) -> dict:
        return processes.wait_for(
            lambda: (
                self.rows().get(uri) if self.rows().get(uri, {}).get("state") in states else None
            ),
            timeout_s,
            f"{uri} to be {' or '.join(states)} in Redis",
        )

    def add_pool(self, *members: tuple[testbed.Downstream, float]) -> None:
        for ds, weight in members:
            self.store.add(ds.uri, weight)
        for ds, _ in members:
            self.wait_state(ds.uri, ("up", "slowstart"))


@pytest.fixture
def bed(tmp_path: Path, redis_server: int) -> Iterator[Bed]:
    url = f"redis://127.0.0.1:{redis_server}/0"
    connect(url, 1000).flushdb()
    bed = Bed(tmp_path, url)
    yield bed
    bed.close()


def invite_shares(
    downstreams: list[testbed.Downstream], before: dict[str, int]
) -> dict[str, float]:
    """Share of the INVITEs each downstream received since the ``before`` snapshot."""
    now = {ds.name: ds.counts().get("invite", 0) for ds in downstreams}
    delta = {name: now[name] - before.get(name, 0) for name in now}
    total = sum(delta.values())
    return {name: (count / total if total else 0.0) for name, count in delta.items()}


def invite_counts(downstreams: list[testbed.Downstream]) -> dict[str, int]:
    return {ds.name: ds.counts().get("invite", 0) for ds in downstreams}


def calls_complete(bed: Bed, ds: testbed.Downstream, calls: int = 10, **caller: object) -> None:
    """``calls`` calls through the balancer to ``ds`` (the whole pool) all succeed, and ``ds``
    sees each call's INVITE, ACK and BYE: the ACK and BYE came through the balancer by the
    Record-Route set."""
    bed.add_pool((ds, 1.0))
    before = ds.counts()
    result = bed.caller(calls, 10, **caller).wait(60)
    assert (result.successful, result.failed) == (calls, 0), result.output[-2000:]
    after = ds.counts()
    for method in ("invite", "ack", "bye"):
        assert after.get(method, 0) - before.get(method, 0) == calls, (method, before, after)


QUIET_POLL_S = 0.05
"""How often ``settled_count`` reads its count: a tenth of the quiet time it waits for."""


def settled_count(
    count: Callable[[], int], within_s: float, what: str, quiet_s: float = 0.5
) -> int:
    """The value of ``count`` once it has stopped changing for ``quiet_s``, asserting that its
    last change came at most ``within_s`` after the call (a drain's bound: the proxy's last
    new call arrived within it). Waits on the count itself, not a fixed time; a count still
    moving after ``within_s + quiet_s`` fails at once."""
    started = time.monotonic()
    value, changed = count(), started
    while time.monotonic() - changed < quiet_s:
        if time.monotonic() - started > within_s + quiet_s:
            raise AssertionError(f"{what}: still changing {within_s + quiet_s:.1f} s on")
        time.sleep(QUIET_POLL_S)
        current = count()
        if current != value:
            value, changed = current, time.monotonic()
    assert changed - started <= within_s, f"{what}: last change {changed - started:.2f} s on"
    return value
