"""The pool, the published weights, the agents' reports: the balancer's shared state.

Key names come from ``keys.Keys``; record formats from ``core.pool`` (the operator's list)
and ``core.reports`` (reports are msgpack bytes, read on a client that does not decode).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Mapping, Sequence

import redis

from counterpoise import clock
from counterpoise.core.pool import Admin, ProxyConfig, parse_pool
from counterpoise.store.client import ERRORS, Store


class UnknownProxy(LookupError):
    pass


class PoolStore(Store):
    errors = ERRORS

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        super().__init__(client, prefix)
        # Reports are msgpack bytes: read them on connections that do not decode replies,
        # made the way the client's own are (same connection class: TLS, unix socket).
        pool = client.connection_pool
        kwargs = {**pool.connection_kwargs, "decode_responses": False}
        self._raw = redis.Redis(
            connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
        )
        self._announcements: redis.client.PubSub | None = None

    # --- the operator's side -------------------------------------------------------------

    def add(self, uri: str, base_weight: float = 1.0) -> ProxyConfig:
        """Add a proxy, or change the base weight of one already in the pool (its admin state
        is kept)."""
        current = self.get(uri)
        config = ProxyConfig(
            uri=uri,
            base_weight=base_weight,
            admin=current.admin if current else Admin.ACTIVE,
            added_ms=current.added_ms if current else clock.wall_ms(),
        )
        self._write(uri, config.to_json())
        return config

    def remove(self, uri: str) -> None:
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hdel(self.keys.pool, uri)
            pipe.incr(self.keys.pool_version)
            removed, _ = pipe.execute()
        if not removed:
            raise UnknownProxy(uri)

    def set_admin(self, uri: str, admin: Admin) -> ProxyConfig:
        current = self.get(uri)
        if current is None:
            raise UnknownProxy(uri)
        config = dataclasses.replace(current, admin=admin)
        self._write(uri, config.to_json())
        return config

    def get(self, uri: str) -> ProxyConfig | None:
        """One proxy's record, read alone (HGET), or None if it is not in the pool."""
        text = self.client.hget(self.keys.pool, uri)
        return None if text is None else parse_pool({uri: text}).get(uri)

    def _write(self, uri: str, record: str) -> None:
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.pool, uri, record)
            pipe.incr(self.keys.pool_version)
            pipe.execute()

    # --- the balancer's side -------------------------------------------------------------

    def version(self) -> int:
        value = self.client.get(self.keys.pool_version)
        return int(value) if value is not None else 0

    def poll(self, uris: Sequence[str]) -> tuple[int, list[bytes | None]]:
        """The pool's version and the agents' reports of ``uris``, in one round trip."""
        with self._raw.pipeline(transaction=False) as pipe:
            pipe.get(self.keys.pool_version)
            if uris:
                pipe.mget([self.keys.report(uri) for uri in uris])
            results = pipe.execute()
        version = int(results[0]) if results[0] is not None else 0
        return version, (list(results[1]) if uris else [])

    def announced_reports(self) -> list[str]:
        """Proxy URIs agents announced a report for since the last call (subscribing on the
        first call). Reading already-buffered messages costs no round trip."""
        if self._announcements is None:
            self._announcements = self.client.pubsub(ignore_subscribe_messages=True)
            self._announcements.subscribe(self.keys.reports_channel)
        uris = []
        while (message := self._announcements.get_message(timeout=0)) is not None:
            if isinstance(message.get("data"), str):
                uris.append(message["data"])
        return uris

    def drop_announcements(self) -> None:
        """Forget the subscription (Redis failed); the next ``announced_reports`` makes a new
        one."""
        if self._announcements is not None:
            with contextlib.suppress(*ERRORS):
                self._announcements.close()
            self._announcements = None

    def put_report(self, uri: str, data: bytes, ttl_ms: int) -> None:
        """Store a report the way the agent does (used by the agent and by tests)."""
        with self.client.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.report(uri), data, px=ttl_ms)
            pipe.publish(self.keys.reports_channel, uri)
            pipe.execute()

    def pool(self) -> dict[str, ProxyConfig]:
        return parse_pool(self.client.hgetall(self.keys.pool))

    def versioned_pool(self) -> tuple[int, dict[str, ProxyConfig]]:
        """Version and list read in one round trip, consistent with each other."""
        with self.client.pipeline(transaction=True) as pipe:
            pipe.get(self.keys.pool_version)
            pipe.hgetall(self.keys.pool)
            version, records = pipe.execute()
        return (int(version) if version is not None else 0), parse_pool(records)

    def publish_weights(
        self,
        node: str,
        records: Mapping[str, Mapping[str, object]],
        ttl_ms: int,
        now_ms: int,
        rejects: Mapping[str, object] | None = None,
    ) -> None:
        key = self.keys.weights(node)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            if records:
                pipe.hset(
                    key, mapping={u: json.dumps(r, sort_keys=True) for u, r in records.items()}
                )
                pipe.pexpire(key, ttl_ms)
            if rejects:
                pipe.hset(self.keys.rejects(node), mapping=rejects)
                pipe.pexpire(self.keys.rejects(node), ttl_ms)
            pipe.zadd(self.keys.nodes, {node: now_ms})
            pipe.zremrangebyscore(self.keys.nodes, 0, now_ms - ttl_ms)
            pipe.execute()

    def node_rejects(self, now_ms: int, ttl_ms: int) -> dict[str, dict[str, str]]:
        """Per live node, what it rejected (``cp:rejects:<node>``)."""
        nodes = self.client.zrangebyscore(self.keys.nodes, now_ms - ttl_ms, "+inf")
        return {node: self.client.hgetall(self.keys.rejects(node)) for node in nodes}

    def node_weights(self, now_ms: int, ttl_ms: int) -> dict[str, dict[str, dict]]:
        """Per live node, the weights it published: node -> proxy URI -> record."""
        nodes = self.client.zrangebyscore(self.keys.nodes, now_ms - ttl_ms, "+inf")
        result = {}
        for node in nodes:
            raw = self.client.hgetall(self.keys.weights(node))
            result[node] = {uri: json.loads(text) for uri, text in raw.items()}
        return result
