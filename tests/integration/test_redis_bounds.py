"""What an agent's credentials can do to Redis, on a real Redis with the project's
``redis.conf`` and roles: no value over ``proto-max-bulk-len``, never an eviction of the
location records, a report read with its size bounded before the transfer, and an
announcement flood that costs the sync loop one bounded read per tick."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from counterpoise import clock, processes
from counterpoise.core.location import PendingWrite, Record
from counterpoise.core.settings import Settings
from counterpoise.store.acl import add_agent_user
from counterpoise.store.client import connect
from counterpoise.store.keys import AOR, DIALOG
from counterpoise.store.location import LocationStore
from counterpoise.store.pool import MAX_ANNOUNCEMENTS_PER_TICK, PoolStore

from ..fakes.sync import Harness
from .test_roles import PREFIX, AclRedis

A, B = "sip:10.0.0.1:5060", "sip:10.0.0.2:5060"
RECORDS = 20
TICK_BOUND_MS = 50
"""A tick with two proxies takes about 2 ms on this Redis; a 1 MB report read whole would
not fit the default Redis timeout on a loaded host, a bounded one changes nothing."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclRedis]:
    yield from AclRedis.serve(tmp_path_factory.mktemp("bounds"))


@pytest.fixture
def admin(server: AclRedis) -> redis.Redis:
    client = server.client("default")
    client.flushdb()
    return client


@pytest.fixture
def agent(server: AclRedis, admin: redis.Redis) -> PoolStore:
    """The agent of proxy A, as ``counterpoise agent-user`` makes it."""
    user = add_agent_user(admin, A, PREFIX, "agent-secret")
    url = f"redis://{user}:agent-secret@127.0.0.1:{server.port}/0"
    return PoolStore(connect(url, 2000, decode=False), PREFIX)


@pytest.fixture
def harness(server: AclRedis, admin: redis.Redis) -> Harness:
    """A balancer node's sync loop on the pool A, B."""
    operator = PoolStore(server.client("operator"), PREFIX)
    operator.add(A)
    operator.add(B)
    harness = Harness(PoolStore(server.client("balancer"), PREFIX), Settings())
    harness.tick(100)
    assert set(harness.loop.pool) == {A, B}
    return harness


def location_records(server: AclRedis) -> LocationStore:
    """The balancer's location records: ``RECORDS`` registrations and dialogs, with expiry
    (what an eviction policy such as ``volatile-ttl`` would take first)."""
    store = LocationStore(server.client("balancer"), PREFIX)
    for index in range(RECORDS):
        store.put(AOR, f"u{index}@h", Record(A, 1), 600_000)
        store.put(DIALOG, f"call-{index}", Record(A, 1, 0, "f", "t"), 600_000)
    return store


def test_agent_cannot_store_a_large_value_nor_evict_a_record(
    server: AclRedis, admin: redis.Redis, agent: PoolStore
) -> None:
    records = location_records(server)
    assert admin.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    for size in (2 * 1024 * 1024, 100 * 1024 * 1024):
        with pytest.raises(redis.exceptions.RedisError):
            agent.put_report(A, b"x" * size, 3000)
    assert admin.exists(f"{PREFIX}report:{A}") == 0
    assert len(list(records.scan())) == 2 * RECORDS
    assert admin.info("stats")["evicted_keys"] == 0
    records.put(AOR, "after@h", Record(B, 1), 600_000)  # the balancer still writes


def test_agent_cannot_hoard_memory_in_a_transaction(
    server: AclRedis, admin: redis.Redis, agent: PoolStore
) -> None:
    """Commands queued after MULTI are held until EXEC: 90 MB of them pass every size limit
    one by one, and ``maxmemory-clients`` disconnects the client that holds them."""
    records = location_records(server)
    almost_1_mb = b"x" * (900 * 1024)
    with (
        pytest.raises(redis.exceptions.ConnectionError),
        agent.client.pipeline(transaction=True) as pipe,
    ):
        for _ in range(100):
            pipe.set(f"{PREFIX}report:{A}", almost_1_mb)
        pipe.execute()
    assert admin.info("stats")["evicted_clients"] >= 1
    assert admin.info("stats")["evicted_keys"] == 0
    assert len(list(records.scan())) == 2 * RECORDS


def test_a_large_report_costs_the_tick_a_few_kilobytes(
    server: AclRedis, admin: redis.Redis, agent: PoolStore, harness: Harness
) -> None:
    largest = 1024 * 1024 - 1024  # what proto-max-bulk-len lets through, with the command
    agent.put_report(A, b"\x00" * largest, 60_000)
    sent_before = admin.info("stats")["total_net_output_bytes"]
    started_ms = clock.perf_ns() / 1e6
    harness.tick(100)
    took_ms = clock.perf_ns() / 1e6 - started_ms
    sent = admin.info("stats")["total_net_output_bytes"] - sent_before
    assert sent < 64 * 1024, f"{sent} bytes sent for one tick"
    assert took_ms < TICK_BOUND_MS
    assert harness.loop.redis_ok
    assert harness.loop.loads.rejected["report"] == 1
    assert "larger than a report" in harness.loop.loads.last_reason["report"]


def test_an_announcement_flood_is_read_in_bounded_ticks(
    server: AclRedis, agent: PoolStore, harness: Harness
) -> None:
    stranger = "sip:10.9.9.9:5060"
    harness.tick(100)  # subscribed
    flood = 20 * MAX_ANNOUNCEMENTS_PER_TICK
    with agent.client.pipeline(transaction=False) as pipe:
        for _ in range(flood):
            pipe.publish(f"{PREFIX}reports", A)
        pipe.execute()
    for _ in range(3):
        started_ms = clock.perf_ns() / 1e6
        harness.tick(100)
        assert clock.perf_ns() / 1e6 - started_ms < TICK_BOUND_MS
        assert harness.loop.redis_ok
    # The subscription was dropped with the backlog and made anew: announcements still count.
    agent.client.publish(f"{PREFIX}reports", stranger)
    processes.wait_for(
        lambda: harness.tick(100) or harness.loop.loads.rejected["report"] == 1,
        5.0,
        "the announcement after the flood to be read",
    )
    assert "not in the pool" in harness.loop.loads.last_reason["report"]


def test_a_subscriber_redis_cut_costs_only_announcements(
    server: AclRedis, admin: redis.Redis, agent: PoolStore, harness: Harness
) -> None:
    """Published faster than a stalled node reads: Redis cuts the subscriber at its
    ``client-output-buffer-limit pubsub``, never keeps more than that for it."""
    harness.tick(100)  # subscribed, then the node stalls while the agent floods
    payload = b"sip:" + b"x" * 4000
    for _ in range(10):  # 40 MB: more than the kernel's socket buffers and the 1 MB allowed
        with agent.client.pipeline(transaction=False) as pipe:
            for _ in range(1000):
                pipe.publish(f"{PREFIX}reports", payload)
            pipe.execute()
    processes.wait_for(
        lambda: admin.pubsub_numsub(f"{PREFIX}reports")[0][1] == 0,
        5.0,
        "Redis to cut the subscriber",
    )
    harness.tick(100)
    assert harness.loop.redis_ok
    harness.tick(100)
    assert admin.pubsub_numsub(f"{PREFIX}reports")[0][1] == 1  # subscribed anew


def test_the_embedded_redis_runs_with_the_limits(admin: redis.Redis) -> None:
    config = admin.config_get("*")
    assert int(config["proto-max-bulk-len"]) == 1024 * 1024
    assert int(config["client-query-buffer-limit"]) == 1024 * 1024
    assert config["client-output-buffer-limit"].split("pubsub ")[1] == "1048576 262144 10"
    assert int(config["maxmemory-clients"]) == 64 * 1024 * 1024


@pytest.mark.parametrize(
    ("call_id_chars", "tag_chars", "source", "most_bytes"),
    [(40, 10, "198.51.100.7", 700), (256, 128, "2001:db8:1:2::/64", 1400)],
    ids=["typical", "longest"],
)
def test_one_source_holds_its_cap_in_keys_and_bytes(
    server: AclRedis,
    admin: redis.Redis,
    call_id_chars: int,
    tag_chars: int,
    source: str,
    most_bytes: int,
) -> None:
    """docs/location.md's worst case per source: ``cap`` + 1 keys (the records and the
    source's ZSET), and the bytes each record costs Redis (``used_memory``); more calls from
    that source are refused."""
    cap, now_ms, ttl_ms = 2000, 1_765_000_000_000, 7_200_000
    store = LocationStore(server.client("balancer"), PREFIX)
    record = Record(A, now_ms, now_ms + ttl_ms, "f" * tag_chars, "t" * tag_chars, source)
    names = [(f"{n:08d}" + "c" * call_id_chars)[:call_id_chars] for n in range(cap + 10)]
    writes = [PendingWrite.setting(name, record, ttl_ms) for name in names]
    clients = admin.info("clients")["connected_clients"]
    before = admin.info("memory")["used_memory"]
    flushed = [store.apply_dialogs(writes[n : n + 500], now_ms, cap) for n in range(0, cap, 500)]
    # The writer's connections closed and freed by Redis: their buffers (a pipeline of 500
    # writes) are not what the records cost.
    for pool in (store.client.connection_pool, store.raw.connection_pool):
        pool.disconnect()
    processes.wait_for(
        lambda: admin.info("clients")["connected_clients"] == clients, 5, "the writer gone"
    )
    per_record = (admin.info("memory")["used_memory"] - before) / cap
    assert sum(f.written for f in flushed) == cap and admin.dbsize() == cap + 1
    assert store.apply_dialogs(writes[cap:], now_ms, cap).capped == 10
    print(f"{call_id_chars}-character Call-ID, {tag_chars}-character tags: {per_record:.0f} B")
    assert per_record < most_bytes
