"""Fixtures and rules of the whole suite.

Every test under ``tests/e2e`` is marked ``e2e`` (it starts Kamailio or SIPp), so that
``pytest -m "not e2e"`` is the fast suite: unit tests, and integration tests on a real Redis.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from counterpoise.processes import Process, free_port, start_redis

from .redis_servers import Servers

E2E = Path(__file__).parent / "e2e"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if E2E in item.path.parents:
            item.add_marker(pytest.mark.e2e)


class RedisServer:
    """A redis-server the test may stop, pause and restart (same port, same data dir)."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port(socket.SOCK_STREAM)
        self.data_dir = data_dir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: Process | None = None

    def start(self) -> None:
        assert self.proc is None or not self.proc.alive()
        self.proc = start_redis(self.port, self.data_dir)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.signal(signal.SIGCONT)  # a paused Redis cannot act on SIGTERM
            self.proc.stop()

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections, nothing answers (a hung Redis)."""
        assert self.proc is not None
        self.proc.signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.signal(signal.SIGCONT)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """A Redis behind a password on TLS (a CA made by the test) and on a unix socket."""
    servers = Servers(tmp_path_factory.mktemp("tls"))
    yield servers
    servers.proc.stop()
