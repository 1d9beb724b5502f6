"""The one way to reach Redis: a client whose every call is bounded in time."""

from __future__ import annotations

from typing import Self

import redis

from counterpoise.store.keys import Keys

ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, OSError, ValueError)
"""What a store call may raise when Redis is down, slow or holds garbage; every one means
"carry on with what we had"."""


def connect(url: str, timeout_ms: int, decode: bool = True) -> redis.Redis:
    """A client whose every call returns or fails within ``timeout_ms`` (connect and read).
    ``decode=False`` returns bytes (msgpack reports)."""
    seconds = timeout_ms / 1000.0
    return redis.Redis.from_url(
        url,
        socket_timeout=seconds,
        socket_connect_timeout=seconds,
        decode_responses=decode,
        health_check_interval=0,
    )


class Store:
    """Base of the stores: one client, one key schema, opened one way."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.keys = Keys(prefix)

    @classmethod
    def open(cls, url: str, prefix: str, timeout_ms: int) -> Self:
        """A store on a new connection to ``url``, each call bounded by ``timeout_ms``."""
        return cls(connect(url, timeout_ms), prefix)

    def ping(self) -> None:
        """Raise one of ``ERRORS`` unless Redis answers."""
        self.client.ping()
