"""LocationStore against a real Redis: key schema, expiry, one-round-trip lookup, scan."""

from __future__ import annotations

import json

import redis

from counterpoise.core.location import PendingWrite, Record
from counterpoise.processes import wait_for
from counterpoise.store.keys import AOR, DIALOG, DOMAIN, PIN
from counterpoise.store.location import LocationStore

A, B, C = "sip:10.0.0.1:5060", "sip:10.0.0.2:5060", "sip:10.0.0.3:5060"


def test_records_are_plain_json_under_the_documented_keys(redis_client: redis.Redis):
    store = LocationStore(redis_client, "cp:")
    store.put(AOR, "alice@example.com", Record(A, 1, 61_000), ttl_ms=60_000)
    store.put(PIN, "bob@example.com", Record(B, 2))
    store.put(DOMAIN, "example.org", Record(C, 3))
    store.put(DIALOG, "abc@host", Record(A, 4, 5, "f", "t"), ttl_ms=1000)

    assert sorted(redis_client.keys("cp:loc:*")) == [
        "cp:loc:aor:alice@example.com",
        "cp:loc:dlg:abc@host",
        "cp:loc:domain:example.org",
        "cp:loc:pin:bob@example.com",
    ]
    assert json.loads(redis_client.get("cp:loc:aor:alice@example.com")) == {
        "proxy": A,
        "since_ms": 1,
        "expires_ms": 61_000,
    }
    assert 59_000 < redis_client.pttl("cp:loc:aor:alice@example.com") <= 60_000
    assert redis_client.pttl("cp:loc:pin:bob@example.com") == -1
    assert json.loads(redis_client.get("cp:loc:dlg:abc@host"))["to_tag"] == "t"


def test_lookup_reads_pin_registration_and_domain_in_one_command(redis_client):
    store = LocationStore(redis_client, "cp:")
    assert store.lookup("u@example.org", "example.org") == (None, None, None)
    store.put(AOR, "u@example.org", Record(A, 1), ttl_ms=10_000)
    store.put(DOMAIN, "example.org", Record(C, 1))
    assert store.lookup("u@example.org", "example.org") == (None, Record(A, 1), Record(C, 1))
    before = redis_client.info("commandstats").get("cmdstat_mget", {}).get("calls", 0)
    store.lookup("u@example.org", "example.org")
    after = redis_client.info("commandstats")["cmdstat_mget"]["calls"]
    assert after == before + 1


def test_garbage_reads_as_no_record(redis_client):
    store = LocationStore(redis_client, "cp:")
    redis_client.set("cp:loc:aor:u@h", "not json")
    assert store.lookup("u@h", "h") == (None, None, None)


def test_short_ttl_expires(redis_client):
    store = LocationStore(redis_client, "cp:")
    store.put(AOR, "u@h", Record(A), ttl_ms=50)
    assert store.get(AOR, "u@h") == Record(A)
    wait_for(lambda: store.get(AOR, "u@h") is None, 2, "the record to expire")


def test_delete_and_entries(redis_client):
    store = LocationStore(redis_client, "cp:")
    store.put(DIALOG, "c@h", Record(A), ttl_ms=5000)
    [entry] = store.entries(DIALOG, "c@h")
    assert (entry.kind, entry.name, entry.record, 0 < entry.ttl_ms <= 5000) == (
        DIALOG,
        "c@h",
        Record(A),
        True,
    )
    assert store.delete(DIALOG, "c@h")
    assert not store.delete(DIALOG, "c@h")
    assert store.entries(DIALOG, "c@h") == []


def test_scan_lists_every_kind_and_only_this_prefix(redis_client):
    store = LocationStore(redis_client, "cp:")
    other = LocationStore(redis_client, "other:")
    for n in range(1200):  # more than one SCAN batch
        store.put(AOR, f"u{n}@h", Record(A), ttl_ms=60_000)
    store.put(DOMAIN, "h", Record(B))
    store.put(DIALOG, "weird*[id]", Record(C))
    other.put(AOR, "x@h", Record(A))

    entries = list(store.scan())

    assert len(entries) == 1202
    names = {(e.kind, e.name) for e in entries}
    assert ("domain", "h") in names and ("dlg", "weird*[id]") in names
    assert [e.name for e in store.scan((DIALOG,))] == ["weird*[id]"]


def test_queued_dialog_writes_apply_in_one_pipeline(redis_client):
    store = LocationStore(redis_client, "cp:")
    store.put(DIALOG, "old@h", Record(A, 1))
    record = Record(B, 2, 3, "f", "t").to_json()
    store.put(DIALOG, "old@h", Record(A, 1, 0, "of", "ot", "src"))
    writes = [PendingWrite("new@h", record, 60_000), PendingWrite("old@h", tags=("of", "ot"))]
    store.apply_dialogs(writes, 1, 10)
    assert redis_client.get("cp:loc:dlg:new@h") == record
    assert 59_000 < redis_client.pttl("cp:loc:dlg:new@h") <= 60_000
    assert redis_client.exists("cp:loc:dlg:old@h") == 0
