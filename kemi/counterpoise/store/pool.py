"""The pool, the published weights, the agents' reports: the balancer's shared state.

Key names come from ``keys.Keys``; record formats from ``core.pool`` (the operator's list)
and ``core.reports`` (reports are msgpack bytes, read on a client that does not decode).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

import redis

from counterpoise import clock
from counterpoise.core.policy.share import MAX_SENDS_BYTES
from counterpoise.core.pool import Admin, ProxyConfig, parse_pool, parse_version
from counterpoise.core.reports import MAX_REPORT_BYTES
from counterpoise.core.untrusted import BadRecord, untrusted
from counterpoise.store.client import ERRORS, Store

MAX_ANNOUNCEMENTS_PER_TICK = 1000
"""Announcements one sync tick reads at most. Every agent announces each report (a few a
second), so a pool of a hundred proxies sends well under this per tick; more is a flood."""


class UnknownProxy(LookupError):
    pass


class PoolStore(Store):
    errors = ERRORS

    def __init__(self, client: redis.Redis[Any], prefix: str) -> None:
        super().__init__(client, prefix)
        self._announcements: redis.client.PubSub | None = None

    # --- the operator's side -------------------------------------------------------------

    def add(self, uri: str, base_weight: float = 1.0) -> ProxyConfig:
        """Add a proxy, or change the base weight of one already in the pool (its admin state
        is kept; an unusable stored record is replaced)."""
        try:
            current = self.get(uri)
        except BadRecord:
            current = None
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
        """One proxy's record, read alone (HGET), or None if it is not in the pool;
        ``BadRecord`` if the stored one is unusable (``add`` writes a good one over it)."""
        text = self.raw.hget(self.keys.pool, uri)
        return None if text is None else ProxyConfig.from_json(uri, text)

    def _write(self, uri: str, record: str) -> None:
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.pool, uri, record)
            pipe.incr(self.keys.pool_version)
            written, bumped = pipe.execute(raise_on_error=False)
        if isinstance(written, Exception):
            raise written
        if isinstance(bumped, redis.ResponseError):
            # The version is not an integer (a hand edit): the record is written, and nodes
            # reload the pool on every tick until the version is one again. Restart it from
            # the clock, above any count it can have reached, so no node mistakes it for one
            # it has already seen.
            self.client.set(self.keys.pool_version, clock.wall_ms())

    # --- the balancer's side -------------------------------------------------------------

    def version(self) -> int | None:
        """``cp:pool:version``; None when it is not an integer (``core.pool.parse_version``)."""
        return parse_version(self.client.get(self.keys.pool_version))

    def poll(self, uris: Sequence[str]) -> tuple[int | None, list[bytes | None]]:
        """The pool's version (None: not an integer) and the agents' reports of ``uris``, in
        one round trip. A report is read with its size bounded before the transfer: at most
        one byte more than ``MAX_REPORT_BYTES`` (``GETRANGE``), so an agent that wrote a large
        value costs every node a few KB per tick, and the report is refused as too large. A
        missing key, an empty value or a key that is no string reads as no report."""
        with self.raw.pipeline(transaction=False) as pipe:
            pipe.get(self.keys.pool_version)
            for uri in uris:
                pipe.getrange(self.keys.report(uri), 0, MAX_REPORT_BYTES)
            version, *reports = pipe.execute(raise_on_error=False)
        if isinstance(version, Exception):
            raise version
        return parse_version(version), [r if isinstance(r, bytes) and r else None for r in reports]

    def announced_reports(self) -> list[str]:
        """Proxy URIs agents announced a report for since the last call (subscribing on the
        first call). Reading already-buffered messages costs no round trip.

        At most ``MAX_ANNOUNCEMENTS_PER_TICK`` are read: beyond that the subscription is
        dropped, so Redis discards the rest, and made anew at the next call. A subscription
        Redis cut (its ``client-output-buffer-limit pubsub``) is made anew the same way; either
        way only announcements are lost, never the poll: an agent flooding the channel costs
        the balancer one bounded read and one reconnection per tick."""
        uris: list[str] = []
        try:
            if self._announcements is None:
                self._announcements = self.client.pubsub(ignore_subscribe_messages=True)
                self._announcements.subscribe(self.keys.reports_channel)
            for _ in range(MAX_ANNOUNCEMENTS_PER_TICK):
                message = self._announcements.get_message(timeout=0)
                if message is None:
                    return uris
                if isinstance(message.get("data"), str):
                    uris.append(message["data"])
        except ERRORS:
            pass
        self.drop_announcements()
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
        """The usable records of the pool (bad ones left out)."""
        return parse_pool(self.raw.hgetall(self.keys.pool))[0]

    def versioned_pool(self) -> tuple[int | None, dict[str, ProxyConfig], dict[str, str]]:
        """Version, usable records and the rejected ones (URI -> why), read in one round trip
        and consistent with each other. Read as bytes: a record that is not UTF-8 is one bad
        record, not a failed read of the whole pool."""
        with self.raw.pipeline(transaction=True) as pipe:
            pipe.get(self.keys.pool_version)
            pipe.hgetall(self.keys.pool)
            version, records = pipe.execute()
        return parse_version(version), *parse_pool(records)

    def publish_weights(
        self,
        node: str,
        records: Mapping[str, Mapping[str, object]],
        ttl_ms: int,
        now_ms: int,
        rejects: Mapping[str, int | str] | None = None,
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
                # A copy typed as redis-py's stubs take it (str | bytes keys).
                mapping: dict[str | bytes, int | str] = dict(rejects.items())
                pipe.hset(self.keys.rejects(node), mapping=mapping)
                pipe.pexpire(self.keys.rejects(node), ttl_ms)
            pipe.zadd(self.keys.nodes, {node: now_ms})
            pipe.zremrangebyscore(self.keys.nodes, 0, now_ms - ttl_ms)
            pipe.execute()

    def exchange_sends(
        self, node: str, sends: str, ttl_ms: int, peers: Sequence[str], now_ms: int, live_ms: int
    ) -> tuple[list[str], dict[str, bytes]]:
        """Write what ``node`` sends (``core.policy.share``, expiring after ``ttl_ms``) and
        read, in the same round trip, the nodes that published within ``live_ms`` of
        ``now_ms`` (``cp:nodes``) and the publications of ``peers`` that have not expired
        (each read bounded to one byte more than ``MAX_SENDS_BYTES``). A node found in
        ``cp:nodes`` is read from the next call on: it joins a tick late."""
        with self.raw.pipeline(transaction=False) as pipe:
            pipe.set(self.keys.sends(node), sends, px=ttl_ms)
            pipe.zrangebyscore(self.keys.nodes, now_ms - live_ms, "+inf")
            for peer in peers:
                pipe.getrange(self.keys.sends(peer), 0, MAX_SENDS_BYTES)
            written, nodes, *raws = pipe.execute(raise_on_error=False)
        for result in (written, nodes):
            if isinstance(result, Exception):
                raise result
        names = [name.decode(errors="replace") for name in nodes]
        found = {peer: raw for peer, raw in zip(peers, raws, strict=True) if isinstance(raw, bytes)}
        return [name for name in names if name != node], {p: r for p, r in found.items() if r}

    def node_rejects(self, now_ms: int, ttl_ms: int) -> dict[str, dict[str, str]]:
        """Per live node, what it rejected (``cp:rejects:<node>``)."""
        nodes = self.client.zrangebyscore(self.keys.nodes, now_ms - ttl_ms, "+inf")
        return {node: self.client.hgetall(self.keys.rejects(node)) for node in nodes}

    def node_weights(self, now_ms: int, ttl_ms: int) -> dict[str, dict[str, dict[str, object]]]:
        """Per live node, the weights it published: node -> proxy URI -> record."""
        nodes = self.client.zrangebyscore(self.keys.nodes, now_ms - ttl_ms, "+inf")
        result: dict[str, dict[str, dict[str, object]]] = {}
        for node in nodes:
            raw = self.client.hgetall(self.keys.weights(node))
            result[node] = {}
            for uri, text in raw.items():
                with contextlib.suppress(BadRecord):  # another node's garbage: not shown
                    result[node][uri] = untrusted(functools.partial(_json_object, text))
        return result


def _json_object(text: str) -> dict[str, object]:
    data = json.loads(text)
    if not isinstance(data, dict):
        raise BadRecord("not a JSON object")
    return data
