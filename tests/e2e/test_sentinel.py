"""Redis Sentinel (issue 11): one master, one replica, three sentinels (Debian's
``redis-sentinel``); calls at a steady rate through a balancer on a ``redis+sentinel://`` URL
while the master is killed. Measured: calls lost (target 0) and the time until the balancer
publishes to the new master; after the failover a ``proxy drain`` reaches the balancer."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from counterpoise import processes
from counterpoise.store.client import connect

from .conftest import Bed, invite_counts

pytestmark = pytest.mark.e2e

SERVICE = "cpmaster"
DOWN_AFTER_MS = 1000
"""Sentinels call the master down after this long without an answer (production: 5000)."""


def pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class SentinelSet:
    def __init__(self, folder: Path) -> None:
        self.procs: dict[str, processes.Process] = {}
        self.master = processes.free_port(socket.SOCK_STREAM)
        self.replica = processes.free_port(socket.SOCK_STREAM)
        for name, port, extra in (
            ("master", self.master, []),
            ("replica", self.replica, ["--replicaof", "127.0.0.1", str(self.master)]),
        ):
            data = folder / name
            data.mkdir(parents=True)
            argv = ["redis-server", "--port", str(port), "--dir", str(data), "--save", "",
                    "--appendonly", "no", *extra]  # fmt: skip
            self._start(name, argv, data / "redis.log", port)
        self.sentinels = []
        for index in range(3):
            port = processes.free_port(socket.SOCK_STREAM)
            conf = folder / f"sentinel-{index}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.master} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SERVICE} 10000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
            self._start(
                f"sentinel-{index}", ["redis-sentinel", str(conf)], folder / f"s{index}.log", port
            )
            self.sentinels.append(port)

    def _start(self, name: str, argv: list[str], log: Path, port: int) -> None:
        proc = processes.Process(name, argv, log)
        self.procs[name] = proc
        proc.ensure_started(lambda: pong(port), 10, f"{name} on {port}")

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelSet]:
    group = SentinelSet(tmp_path / "sentinel")
    try:
        yield group
    finally:
        group.stop()


def test_balancer_follows_a_failover_without_losing_a_call(bed: Bed, sentinels: SentinelSet):
    bed.use_redis(sentinels.url)
    processes.wait_for(
        lambda: (
            connect(f"redis://127.0.0.1:{sentinels.replica}/0", 500).info("replication")[
                "master_link_status"
            ]
            == "up"
        ),
        10,
        "the replica in sync",
    )
    a, b = bed.start_downstream("a"), bed.start_downstream("b")
    bed.start_balancer()
    bed.add_pool((a, 1), (b, 1))
    caller = bed.caller(calls=500, rate=25, hold_ms=100)
    processes.wait_for(lambda: min(invite_counts([a, b]).values()) >= 10, 20, "calls flowing")

    new_master = connect(f"redis://127.0.0.1:{sentinels.replica}/0", 500)
    nodes = f"{bed.settings.key_prefix}nodes"
    node = bed.settings.node_name()
    sentinels.procs["master"].kill()
    killed_ms = time.time() * 1000
    processes.wait_for(
        lambda: new_master.info("replication")["role"] == "master", 30, "the replica promoted"
    )
    promoted_ms = time.time() * 1000
    # The balancer publishes every second: its first write to the new master after the kill.
    published_ms = processes.wait_for(
        lambda: (score := new_master.zscore(nodes, node)) and score > promoted_ms and score,
        30,
        "the balancer to publish to the new master",
    )
    print(
        f"promoted {promoted_ms - killed_ms:.0f} ms after the kill; balancer followed "
        f"{published_ms - killed_ms:.0f} ms after the kill"
    )

    drained = bed.cli("proxy", "drain", a.uri)  # the CLI finds the new master by itself
    assert drained.returncode == 0, drained.stderr
    time.sleep(1.0)
    at_drain = a.counts()["invite"]
    result = caller.wait(120)
    print(f"calls: {result.successful} successful, {result.failed} failed")
    assert result.failed == 0, result.output[-2000:]
    assert a.counts()["invite"] == at_drain, "the drain did not reach the balancer within 1 s"
