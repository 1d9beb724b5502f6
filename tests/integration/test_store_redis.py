"""PoolStore against a real Redis: the operator's list, its version, published weights."""

from __future__ import annotations

import json
import time

import pytest
import redis
from redis.connection import Connection

from counterpoise.core.pool import Admin, ProxyConfig
from counterpoise.store.client import pack
from counterpoise.store.pool import PoolStore, UnknownProxy

A, B, C = "sip:10.0.0.1:5060", "sip:10.0.0.2:5060", "sip:10.0.0.3:5060"


def now_ms() -> int:
    return int(time.time() * 1000)


def test_empty_store(store: PoolStore):
    assert store.pool() == {}
    assert store.version() == 0
    assert store.versioned_pool() == (0, {}, {})


def test_add_list_remove(store: PoolStore):
    before = now_ms()
    config = store.add(A)
    assert config.uri == A
    assert config.base_weight == 1.0
    assert config.admin == Admin.ACTIVE
    assert before <= config.added_ms <= now_ms()
    store.add(B, 2.5)
    pool = store.pool()
    assert set(pool) == {A, B}
    assert pool[A] == config
    assert pool[B].base_weight == 2.5
    store.remove(A)
    assert set(store.pool()) == {B}
    assert store.versioned_pool() == (3, store.pool(), {})


def test_record_format_in_redis(store: PoolStore, redis_client):
    config = store.add(A, 3.0)
    raw = redis_client.hget("cp:pool", A)
    assert json.loads(raw) == {"weight": 3.0, "admin": "active", "added_ms": config.added_ms}


def test_drain_and_undrain(store: PoolStore):
    store.add(A)
    store.add(B)
    drained = store.set_admin(A, Admin.DRAINED)
    assert drained.admin == Admin.DRAINED
    assert store.pool()[A].admin == Admin.DRAINED
    assert store.pool()[B].admin == Admin.ACTIVE
    store.set_admin(A, Admin.ACTIVE)
    assert store.pool()[A].admin == Admin.ACTIVE


def test_changing_the_weight_keeps_admin_state_and_added_time(store: PoolStore):
    first = store.add(A)
    store.set_admin(A, Admin.DRAINED)
    changed = store.add(A, 4.0)
    assert changed == ProxyConfig(A, 4.0, Admin.DRAINED, first.added_ms)
    assert store.pool()[A] == changed


def test_version_increments_on_each_change(store: PoolStore):
    versions = [store.version()]
    for change in (
        lambda: store.add(A),
        lambda: store.add(B),
        lambda: store.add(A, 2.0),
        lambda: store.set_admin(A, Admin.DRAINED),
        lambda: store.set_admin(A, Admin.ACTIVE),
        lambda: store.remove(B),
    ):
        change()
        versions.append(store.version())
    assert versions == [0, 1, 2, 3, 4, 5, 6]
    version, pool, _ = store.versioned_pool()
    assert version == 6
    assert pool == store.pool()


def test_unknown_proxy(store: PoolStore):
    store.add(A)
    with pytest.raises(UnknownProxy):
        store.remove(B)
    with pytest.raises(UnknownProxy):
        store.set_admin(B, Admin.DRAINED)
    with pytest.raises(UnknownProxy):
        store.set_admin(B, Admin.ACTIVE)
    assert set(store.pool()) == {A}
    assert B not in store.client.hkeys("cp:pool")
    store.remove(A)
    with pytest.raises(UnknownProxy):
        store.remove(A)


@pytest.mark.parametrize(
    "garbage",
    [
        "not json",
        "",
        "[1, 2]",
        "42",
        "null",
        '{"weight": -1}',
        '{"weight": 0}',
        '{"weight": "heavy"}',
        '{"weight": null}',
        '{"weight": "nan"}',
        '{"admin": "sleeping"}',
        '{"added_ms": "yesterday"}',
    ],
)
def test_hand_written_garbage_record_is_skipped(store: PoolStore, redis_client, garbage):
    store.add(A)
    redis_client.hset("cp:pool", "sip:garbage", garbage)
    assert set(store.pool()) == {A}
    assert set(store.versioned_pool()[1]) == {A}


def test_hand_written_minimal_record_gets_defaults(store: PoolStore, redis_client):
    redis_client.hset("cp:pool", A, "{}")
    assert store.pool() == {A: ProxyConfig(A, 1.0, Admin.ACTIVE, 0)}


def test_prefixes_keep_pools_apart(store: PoolStore, redis_client):
    other = PoolStore(redis_client, "other:")
    store.add(A)
    other.add(B)
    assert set(store.pool()) == {A}
    assert set(other.pool()) == {B}
    assert (store.version(), other.version()) == (1, 1)


def test_publish_weights_and_node_weights_round_trip(store: PoolStore, redis_client):
    now = now_ms()
    records = {
        A: {"weight": 0.75, "state": "up", "window": {"requests_ok": 3}},
        B: {"weight": 0.0, "state": "drained", "latency_ms": None},
    }
    store.publish_weights("lb1", records, 10_000, now)
    store.publish_weights("lb2", {A: {"weight": 1.0}}, 10_000, now)
    assert store.node_weights(now, 10_000) == {"lb1": records, "lb2": {A: {"weight": 1.0}}}
    assert redis_client.zscore("cp:nodes", "lb1") == now


def test_published_weights_expire(store: PoolStore, redis_client):
    store.publish_weights("lb1", {A: {"weight": 1.0}}, 10_000, now_ms())
    pttl = redis_client.pttl("cp:weights:lb1")
    assert 0 < pttl <= 10_000


def test_republishing_replaces_the_previous_records(store: PoolStore, redis_client):
    now = now_ms()
    store.publish_weights("lb1", {A: {"weight": 1.0}, B: {"weight": 2.0}}, 10_000, now)
    store.publish_weights("lb1", {B: {"weight": 3.0}}, 10_000, now + 1000)
    assert store.node_weights(now + 1000, 10_000) == {"lb1": {B: {"weight": 3.0}}}
    assert redis_client.zscore("cp:nodes", "lb1") == now + 1000
    store.publish_weights("lb1", {}, 10_000, now + 2000)
    assert store.node_weights(now + 2000, 10_000) == {"lb1": {}}
    assert not redis_client.exists("cp:weights:lb1")


def test_stale_nodes_are_dropped(store: PoolStore, redis_client):
    now = now_ms()
    store.publish_weights("old", {A: {"weight": 1.0}}, 10_000, now - 11_000)
    # Read before anyone publishes again: filtered by its score.
    assert store.node_weights(now, 10_000) == {}
    assert "old" in store.node_weights(now - 5_000, 10_000)
    # The next publish by any node removes stale entries from cp:nodes.
    store.publish_weights("new", {B: {"weight": 1.0}}, 10_000, now)
    assert redis_client.zrange("cp:nodes", 0, -1) == ["new"]
    assert list(store.node_weights(now, 10_000)) == ["new"]


def test_infinite_weight_is_left_out_like_nan(store: PoolStore):
    # `counterpoise proxy add URI --weight inf` passes the CLI's `weight > 0` check and
    # store.add writes {"weight": Infinity}. Such a weight cannot route: in WeightedPicker the
    # prefix sums become inf and every draw lands on the last proxy, so the "infinitely heavy"
    # proxy gets no traffic at all, and the published share is inf/inf = NaN. Like NaN and
    # non-positive weights, it must be left out of the pool.
    store.add(A)
    store.add(B, float("inf"))
    assert set(store.pool()) == {A}


@pytest.mark.parametrize(
    "command",
    [["SET", "cp:loc:dlg:a b", '{"proxy": "sip:10.0.0.1"}', "PX", 60000], ["DEL", "é", "", 0]],
)
def test_send_all_packs_a_command_as_redis_py_does(command: list[str | int]):
    assert pack([command]) == b"".join(Connection().pack_command(*command))


def test_send_all_reads_each_reply_in_order(store: PoolStore, redis_client):
    replies = store.send_all([["SET", "k", "v", "PX", 60000], ["GET", "k"], ["PTTL", "k"]])
    assert replies[:2] == ["OK", "v"] and 0 < replies[2] <= 60000


def test_send_all_raises_an_error_reply_and_the_next_call_reads_its_own(store: PoolStore):
    with pytest.raises(redis.ResponseError):
        store.send_all([["SET", "k", "v"], ["INCR", "k"], ["SET", "k2", "v2"]])
    # The connection with a reply unread is dropped: the next call's replies are its own.
    assert store.send_all([["SET", "k3", "v3"], ["GET", "k3"]]) == ["OK", "v3"]
