"""A real redis-server for the integration tests.

One server for the whole session on a free port; every test that uses ``redis_client`` or
``store`` starts from an empty database (``flushdb`` before and after, as redis-py's own tests
do). A test that stops Redis uses ``own_redis`` (``tests/conftest.py``), a server of its own.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import redis

from counterpoise.core.settings import Settings
from counterpoise.processes import free_port, start_redis
from counterpoise.store.client import connect
from counterpoise.store.pool import PoolStore

from ..fakes.sync import Harness

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


@pytest.fixture
def harness(redis_client: redis.Redis) -> Harness:
    """A sync loop with default settings on the test's Redis."""
    return Harness(PoolStore(redis_client, PREFIX), Settings())


@pytest.fixture
def operator(redis_client: redis.Redis) -> PoolStore:
    """The CLI's side of the store (a separate object from the loop's)."""
    return PoolStore(redis_client, PREFIX)
