"""Redis: the proxy list, the published weights, and their key schema.

Key schema (``cp:`` is ``Settings.key_prefix``); README "Redis layout" documents the same:

``cp:pool``                HASH  proxy URI -> JSON ``{"weight": base weight, "admin":
                                 "active" | "drained", "added_ms": epoch ms}``; no expiry.
                                 Written by the CLI only.
``cp:pool:version``        STRING integer, incremented by every change to ``cp:pool``;
                                 balancers poll it every sync tick and reload on change.
``cp:weights:<node>``      HASH  proxy URI -> JSON of the weight that node routes with and
                                 every input of it (see ``weight_record``); expires
                                 ``node_ttl_ms`` after the node's last write.
``cp:nodes``               ZSET  node name -> epoch ms of its last publish.
``cp:rejects:<node>``      HASH  inputs that node rejected: ``report`` / ``header`` -> count,
                                 ``report:last`` / ``header:last`` -> the latest reason;
                                 expires with ``cp:weights:<node>``.
``cp:report:<proxy uri>``  STRING msgpack load report of the proxy's agent (``reports``),
                                 ``PX`` expiry set by the agent.
``cp:reports``             channel the agent ``PUBLISH``-es the proxy URI after each report.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Mapping, Sequence

import redis

ACTIVE = "active"
DRAINED = "drained"


@dataclasses.dataclass(frozen=True)
class ProxyConfig:
    """What the operator set for one proxy."""

    uri: str
    base_weight: float = 1.0
    admin: str = ACTIVE
    added_ms: int = 0

    def to_json(self) -> str:
        return json.dumps(
            {"weight": self.base_weight, "admin": self.admin, "added_ms": self.added_ms},
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, uri: str, text: str) -> ProxyConfig:
        data = json.loads(text)
        weight = float(data.get("weight", 1.0))
        admin = data.get("admin", ACTIVE)
        if not (math.isfinite(weight) and weight > 0) or admin not in (ACTIVE, DRAINED):
            raise ValueError(f"bad pool record for {uri}: {text!r}")
        return cls(uri=uri, base_weight=weight, admin=admin, added_ms=int(data.get("added_ms", 0)))


def parse_pool(records: Mapping[str, str]) -> dict[str, ProxyConfig]:
    """The operator's list from the ``cp:pool`` hash. A record that does not parse (only a
    hand edit can make one: the CLI validates) is left out rather than stopping the sync."""
    pool = {}
    for uri, text in records.items():
        try:
            pool[uri] = ProxyConfig.from_json(uri, text)
        except (ValueError, TypeError, AttributeError):
            continue
    return pool


class Keys:
    """Names of every Redis key, from one prefix."""

    def __init__(self, prefix: str) -> None:
        self.pool = f"{prefix}pool"
        self.pool_version = f"{prefix}pool:version"
        self.nodes = f"{prefix}nodes"
        self.reports_channel = f"{prefix}reports"
        self._weights = f"{prefix}weights:"
        self._rejects = f"{prefix}rejects:"
        self._report = f"{prefix}report:"

    def weights(self, node: str) -> str:
        return self._weights + node

    def rejects(self, node: str) -> str:
        return self._rejects + node

    def report(self, uri: str) -> str:
        return self._report + uri


class UnknownProxy(LookupError):
    pass


def connect(url: str, timeout_ms: int) -> redis.Redis:
    """A client whose every call returns or fails within ``timeout_ms`` (connect and read)."""
    seconds = timeout_ms / 1000.0
    return redis.Redis.from_url(
        url,
        socket_timeout=seconds,
        socket_connect_timeout=seconds,
        decode_responses=True,
        health_check_interval=0,
    )


class PoolStore:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.keys = Keys(prefix)
        # Reports are msgpack bytes: read them on connections that do not decode replies.
        kwargs = {**client.connection_pool.connection_kwargs, "decode_responses": False}
        self._raw = redis.Redis(connection_pool=redis.ConnectionPool(**kwargs))

    # --- the operator's side -------------------------------------------------------------

    def add(self, uri: str, base_weight: float = 1.0) -> ProxyConfig:
        """Add a proxy, or change the base weight of one already in the pool (its admin state
        is kept)."""
        current = self.get(uri)
        config = ProxyConfig(
            uri=uri,
            base_weight=base_weight,
            admin=current.admin if current else ACTIVE,
            added_ms=current.added_ms if current else int(time.time() * 1000),
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

    def set_admin(self, uri: str, admin: str) -> ProxyConfig:
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

    def subscribe_reports(self) -> redis.client.PubSub:
        """A subscription to the channel agents announce their reports on."""
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(self.keys.reports_channel)
        return pubsub

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
