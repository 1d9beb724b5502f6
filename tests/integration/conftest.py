"""A real redis-server for the integration tests.

One server for the whole session on a free port; every test that uses ``redis_client`` or
``store`` starts from an empty database (``flushdb`` before and after, as redis-py's own tests
do). A test that stops Redis uses ``own_redis``, a server of its own.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from counterpoise.processes import Process, free_port, start_redis
from counterpoise.store.client import connect
from counterpoise.store.pool import PoolStore

PREFIX = "cp:"
CLIENT_TIMEOUT_MS = 2000


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port(socket.SOCK_STREAM)
    proc = start_redis(port, tmp_path_factory.mktemp("redis"))
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.stop()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = connect(redis_url, CLIENT_TIMEOUT_MS)
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


@pytest.fixture
def store(redis_client: redis.Redis) -> PoolStore:
    return PoolStore(redis_client, PREFIX)


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
