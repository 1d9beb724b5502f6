"""The stores the unit tests fake, held to one contract with the real ones on Redis: the sync
loop's view of the store (``core.sync.StateStore``: ``store.pool.PoolStore`` and
``tests/fakes/sync.MemoryStore``) and the location records as the edge uses them
(``store.location.LocationStore`` and ``MemoryLocationStore``). If these pass for both, the
unit tests on the fakes say something of the product on Redis."""

from __future__ import annotations

import pytest
import redis

from counterpoise import processes
from counterpoise.core.location import PendingWrite, Record
from counterpoise.core.pool import Admin
from counterpoise.core.sync import StateStore
from counterpoise.store.keys import AOR, DIALOG, DOMAIN, PIN
from counterpoise.store.location import DialogFlush, LocationStore
from counterpoise.store.pool import PoolStore

from ..fakes.sync import MemoryLocationStore, MemoryStore

A, B = "sip:10.0.0.1:5060", "sip:10.0.0.2:5060"
TTL_MS = 60_000
NOW_MS = 1_700_000_000_000


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> StateStore:
    if request.param == "memory":
        return MemoryStore()
    client: redis.Redis = request.getfixturevalue("redis_client")
    return PoolStore(client, "cp:")


def put_report(store: StateStore, uri: str, data: bytes) -> None:
    if isinstance(store, PoolStore):
        store.put_report(uri, data, TTL_MS)
    else:
        store.put_report(uri, data)


def subscribers_become(store: StateStore, count: int) -> None:
    """On Redis, wait until the server counts ``count`` subscribers of the announcements
    (subscribing and closing reach it asynchronously); nothing to wait for in memory."""
    if isinstance(store, PoolStore):
        channel = store.keys.reports_channel
        processes.wait_for(
            lambda: dict(store.client.pubsub_numsub(channel)).get(channel, 0) == count,
            5,
            f"Redis to count {count} subscribers",
            step_s=0.01,
        )


def subscribe(store: StateStore) -> None:
    """Start the subscription (the first ``announced_reports``, which finds nothing)."""
    assert store.announced_reports() == []
    subscribers_become(store, 1)


def announced(store: StateStore, count: int) -> list[str]:
    """The next ``count`` announcements (Redis delivers them asynchronously)."""
    uris: list[str] = []
    processes.wait_for(
        lambda: uris.extend(store.announced_reports()) or len(uris) >= count,
        5,
        f"{count} announcements",
        step_s=0.01,
    )
    return uris


def test_version_moves_with_every_change_and_the_pool_matches_it(store: StateStore):
    assert store.poll([]) == (0, [])
    assert store.versioned_pool() == (0, {}, {})
    store.add(A)
    store.add(B, 2.0)
    store.set_admin(A, Admin.DRAINED)
    version, pool, rejected = store.versioned_pool()
    assert version == store.poll([])[0] == 3 and rejected == {}
    assert {uri: (c.base_weight, c.admin) for uri, c in pool.items()} == {
        A: (1.0, Admin.DRAINED),
        B: (2.0, Admin.ACTIVE),
    }
    store.remove(B)
    assert store.versioned_pool()[0] == 4 and set(store.versioned_pool()[1]) == {A}


def test_poll_reads_the_reports_of_the_uris_asked(store: StateStore):
    put_report(store, A, b"\x81\xa1v\x01")
    assert store.poll([A, B]) == (0, [b"\x81\xa1v\x01", None])


def test_reports_are_announced_only_while_subscribed(store: StateStore):
    put_report(store, A, b"before")  # nobody listens yet: lost
    subscribe(store)
    put_report(store, B, b"after")
    assert announced(store, 1) == [B]
    store.drop_announcements()
    store.drop_announcements()  # twice is harmless
    subscribers_become(store, 0)
    put_report(store, A, b"dropped")  # no subscription: lost
    subscribe(store)
    put_report(store, A, b"again")
    assert announced(store, 1) == [A]


def test_published_records_round_trip_as_json(store: StateStore):
    records = {A: {"weight": 0.5, "state": "up", "window": {"requests_ok": 3}, "probe": None}}
    store.publish_weights("lb1", records, TTL_MS, 1_700_000_000_000, {"report": 2})
    if isinstance(store, PoolStore):
        assert store.node_weights(1_700_000_000_000, TTL_MS) == {"lb1": records}
        assert store.node_rejects(1_700_000_000_000, TTL_MS) == {"lb1": {"report": "2"}}
    else:
        assert store.weights == {"lb1": records}
        assert store.rejects == {"lb1": {"report": "2"}}


@pytest.fixture(params=["memory", "redis"])
def locations(request: pytest.FixtureRequest) -> LocationStore | MemoryLocationStore:
    if request.param == "memory":
        return MemoryLocationStore()
    return LocationStore(request.getfixturevalue("redis_client"), "cp:")


def test_lookup_returns_pin_registration_and_domain_pin(locations):
    assert locations.lookup("alice@example.com", "example.com") == (None, None, None)
    pin, registration, domain = Record(A), Record(B, 1, 2), Record("sip:10.0.0.3:5060")
    locations.put(PIN, "alice@example.com", pin)
    locations.put(AOR, "alice@example.com", registration, TTL_MS)
    locations.put(DOMAIN, "example.com", domain)
    assert locations.lookup("alice@example.com", "example.com") == (pin, registration, domain)
    assert locations.get(AOR, "alice@example.com") == registration
    assert locations.delete(AOR, "alice@example.com") is True
    assert locations.delete(AOR, "alice@example.com") is False
    assert locations.lookup("alice@example.com", "example.com") == (pin, None, domain)


def test_queued_dialog_writes_apply_in_order(locations):
    first, second = Record(A, 1, 0, "f", "t", "src"), Record(B, 2, 0, "f", "t", "src")
    sets = [
        PendingWrite.setting("c1", first, TTL_MS),
        PendingWrite.setting("c2", second, TTL_MS),
    ]
    assert locations.apply_dialogs(sets, NOW_MS, 10) == DialogFlush(written=2)
    assert locations.apply_dialogs(
        [PendingWrite("c1", tags=("t", "f"))], NOW_MS, 10
    ) == DialogFlush(deleted=1)
    assert locations.get(DIALOG, "c1") is None
    assert locations.get(DIALOG, "c2") == second


def test_a_dialog_record_is_deleted_only_with_its_tags(locations):
    record = Record(A, 1, 0, "caller", "callee", "src")
    locations.apply_dialogs([PendingWrite.setting("c1", record, TTL_MS)], NOW_MS, 10)
    forged = [PendingWrite("c1", tags=("caller", "guessed")), PendingWrite("gone", tags=("a", "b"))]
    assert locations.apply_dialogs(forged, NOW_MS, 10) == DialogFlush(forged=1)
    assert locations.get(DIALOG, "c1") == record


def test_a_source_holds_at_most_its_cap_until_its_records_expire(locations):
    def sets(*names: str, source: str = "203.0.113.9") -> list[PendingWrite]:
        record = Record(A, 1, 0, "f", "t", source)
        return [PendingWrite.setting(name, record, TTL_MS) for name in names]

    assert locations.apply_dialogs(sets("a", "b", "c"), NOW_MS, 2) == DialogFlush(2, capped=1)
    assert locations.apply_dialogs(sets("d"), NOW_MS, 2) == DialogFlush(capped=1)
    assert locations.apply_dialogs(sets("e", source="other"), NOW_MS, 2) == DialogFlush(1)
    ended = [PendingWrite("a", tags=("f", "t")), *sets("d")]  # a call ends, the next fits
    assert locations.apply_dialogs(ended, NOW_MS, 2) == DialogFlush(1, deleted=1)
    # Redis expired b and d by now: their entries in the count are dropped with them.
    later_ms = NOW_MS + TTL_MS + 1
    assert locations.apply_dialogs(sets("f", "g", "h"), later_ms, 2) == DialogFlush(2, capped=1)
