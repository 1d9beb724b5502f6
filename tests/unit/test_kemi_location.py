"""The location server's edge (``kamailio/location.py``) through the fake KSR: registrations
recorded from REGISTER replies, requests sent to their holder, dialog records written behind
by the timer process and used by in-dialog requests without a route set, and all of it with
its Redis (here ``MemoryLocationStore``) down."""

from __future__ import annotations

import pytest

from counterpoise.core import location
from counterpoise.core.location import Record
from counterpoise.core.pool import Admin
from counterpoise.core.settings import Fallback, Settings
from counterpoise.kamailio import htables
from counterpoise.store.keys import AOR, DIALOG

from ..fakes.edge import Node, edge_counters
from ..fakes.ksr import FakeKsr
from ..fakes.sync import WALL_EPOCH_MS

A, B = "sip:10.0.0.1:5060", "sip:10.0.0.2:5060"
ALICE = "sip:alice@example.com"
S = Settings()
CALL_ID = "call-1@198.51.100.7"
DIALOGS, QUEUE = htables.DIALOGS.name, htables.DIALOG_WRITES.name


@pytest.fixture
def node(ksr: FakeKsr, monkeypatch: pytest.MonkeyPatch) -> Node:
    return Node(ksr, monkeypatch, S)


def counters(node: Node) -> dict[str, int]:

    return location.sum_counters(dict(node.ksr.htables[htables.LOCATION_COUNTERS.name]))


def register(node: Node, expires_s: int) -> str:
    """A REGISTER of alice through the balancer, answered 200 granting ``expires_s``; the
    proxy it went to."""
    node.route("REGISTER", "sip:example.com", to=ALICE)
    node.reply(
        200, after_ms=5, headers={"Contact": f"<sip:alice@198.51.100.7>;expires={expires_s}"}
    )
    return node.tried[0]


def ack(node: Node, proxy: str, **kwargs: object) -> None:
    """The caller's ACK of the 200, along the route set the INVITE built (the balancer, then
    ``proxy``): it confirms the dialog."""
    sealed = node.sealed_route(proxy, call_id=str(kwargs.get("call_id", CALL_ID)))
    routes = {"Route": f"{sealed}, <{proxy};lr>"}
    node.route("ACK", to_tag="callee-tag", headers=routes, **kwargs)  # type: ignore[arg-type]


def hold(node: Node, proxy: str) -> None:
    node.locations.put(AOR, "alice@example.com", Record(proxy))


def test_register_records_its_proxy_and_requests_follow_it(node: Node, ksr: FakeKsr):
    node.pool(A, B)
    proxy = register(node, expires_s=600)
    now = WALL_EPOCH_MS + node.clock.now
    record = Record(proxy, since_ms=now, expires_ms=now + 600_000)
    assert node.locations.records[(AOR, "alice@example.com")] == (record, 600_000)
    for _ in range(10):
        node.route("INVITE", ALICE)
        assert node.tried == [proxy]
    assert counters(node) | {"lookup_us": 0, "write_us": 0} == {
        "lookups": 11, "none": 1, "registration": 10, "registered": 1, "writes": 1,
        "cache_hits": 9, "lookup_us": 0, "write_us": 0,
    }  # fmt: skip


def test_lookups_are_cached_for_location_cache_ms_and_dropped_by_a_register_here(
    node: Node, ksr: FakeKsr
):
    node.pool(A, B)
    hold(node, A)
    node.route("INVITE", ALICE)
    hold(node, B)  # moved through another node (or the CLI)
    node.clock.advance(S.location.location_cache_ms - 1)
    node.route("INVITE", ALICE)
    assert node.tried == [A]  # still the cached answer: no Redis round trip
    node.clock.advance(1)
    node.route("INVITE", ALICE)
    assert node.tried == [B]  # followed within location_cache_ms
    assert counters(node)["cache_hits"] == 1

    proxy = register(node, expires_s=600)  # a REGISTER through this node drops the entry
    node.route("INVITE", ALICE)
    assert node.tried == [proxy] and counters(node)["cache_hits"] == 1


def test_no_cache_with_location_cache_ms_0(ksr: FakeKsr, monkeypatch: pytest.MonkeyPatch):
    node = Node(ksr, monkeypatch, Settings.of(location_cache_ms=0))
    node.pool(A, B)
    hold(node, A)
    node.route("INVITE", ALICE)
    hold(node, B)
    node.route("INVITE", ALICE)
    assert node.tried == [B] and "cache_hits" not in counters(node)


def test_register_with_expires_0_removes_the_record(node: Node, ksr: FakeKsr):
    node.pool(A)
    register(node, expires_s=600)
    register(node, expires_s=0)
    assert node.locations.records == {}
    assert counters(node)["unregistered"] == 1


def test_request_without_a_user_is_not_looked_up(node: Node, ksr: FakeKsr):
    node.pool(A)
    node.route("INVITE", "sip:example.com")
    assert node.tried == [A] and "lookups" not in counters(node)


def test_unusable_holder_under_reject_gets_480_and_a_held_request_is_not_retried(
    ksr: FakeKsr, monkeypatch: pytest.MonkeyPatch
):
    node = Node(ksr, monkeypatch, Settings.of(location_fallback=Fallback.REJECT))
    node.pool(A, B)
    hold(node, B)
    node.route("INVITE", ALICE)
    assert node.tried == [B]
    node.fail(408, after_ms=S.failover.fr_timer_ms, timeout=True, replied=False)
    assert node.tried == [B]  # bound to its holder: no other proxy
    node.store.set_admin(B, Admin.DRAINED)
    node.tick(100)
    node.route("INVITE", ALICE)
    assert ksr.relays == [] and ksr.sl_replies == [(480, "Holder Proxy Unavailable")]
    assert counters(node)["rejected"] == 1


def test_dialog_record_is_written_behind_and_routes_requests_without_a_route_set(
    node: Node, ksr: FakeKsr
):

    node.pool(A, B)
    node.route("INVITE")
    proxy = node.tried[0]
    node.reply(200, after_ms=5, to_tag="callee-tag")
    assert set(ksr.htables[DIALOGS]) == {CALL_ID} and ksr.htables[QUEUE] == {}
    ack(node, proxy)  # confirmed: queued for Redis
    assert len(ksr.htables[QUEUE]) == 1
    assert node.locations.records == {}  # no Redis round trip on the SIP path
    node.tick(100)
    record, ttl_ms = node.locations.records[(DIALOG, CALL_ID)]
    assert (record.proxy, record.to_tag, record.source) == (proxy, "callee-tag", "198.51.100.7")
    assert S.location.dialog_record_ttl_ms - 10 <= ttl_ms <= S.location.dialog_record_ttl_ms
    assert ksr.htables[QUEUE] == {}

    # The callee's INFO, tags swapped, without the route set: to the dialog's proxy.
    node.route("INFO", from_tag="callee-tag", to_tag="from-tag-1")
    assert node.tried == [proxy]
    assert ksr.relays[0]["routes"] == [f"Route: <{proxy};lr>\r\n"]

    # Another node's worker (no copy in its htable) finds the record in Redis.
    del ksr.htables[DIALOGS][CALL_ID]
    node.route("BYE", to_tag="callee-tag")
    assert node.tried == [proxy]
    node.tick(100)
    assert (DIALOG, CALL_ID) not in node.locations.records
    assert counters(node)["dialog_routed"] == 2


def test_dialog_record_with_other_tags_is_not_used(node: Node, ksr: FakeKsr):
    node.pool(A)
    node.route("INVITE")
    node.reply(200, to_tag="callee-tag")
    node.route("INFO", to_tag="someone-else")
    assert ksr.sl_replies == [(404, "Not here")]
    assert counters(node)["dialog_unknown"] == 1


def test_without_redis_requests_go_by_weight_and_dialog_writes_wait(node: Node, ksr: FakeKsr):

    node.pool(A, B)
    hold(node, B)
    node.locations.fail()
    node.route("INVITE", ALICE)
    assert len(node.tried) == 1  # by weight, whichever it is
    assert counters(node)["redis_skipped"] == counters(node)["redis_errors"] == 1
    node.reply(200, to_tag="callee-tag")
    ack(node, node.tried[0])
    node.tick(100)  # the timer's write fails: kept
    assert len(ksr.htables[QUEUE]) == 1
    assert sum("Redis (dialog records) unreachable" in t for t in ksr.logged("notice")) == 1
    node.locations.recover()
    node.tick(S.redis.redis_backoff_initial_ms)
    assert ksr.htables[QUEUE] == {} and (DIALOG, CALL_ID) in node.locations.records


def test_full_dialog_queue_drops_its_oldest_writes(
    node: Node, ksr: FakeKsr, monkeypatch: pytest.MonkeyPatch
):

    node.pool(A)
    node.locations.fail()
    for call in range(3):
        node.clock.advance(location.QUEUE_BATCH_MS)  # each call's write in a queue entry of its own
        node.route("INVITE", call_id=f"call-{call}")
        node.reply(200, to_tag="callee-tag")
        ack(node, A, call_id=f"call-{call}")
    two_newest = sorted(ksr.htables[QUEUE].items())[1:]
    cap = sum(len(key) + len(str(value)) for key, value in two_newest)
    settings = S.with_values(dialog_queue_max_bytes=cap)
    node.tick()  # makes the timer process's writer; then its cap is lowered
    monkeypatch.setattr(node.balancer.dialog_writes, "_settings", settings)
    node.tick(100)
    assert len(ksr.htables[QUEUE]) == 2
    assert node.balancer.dialog_writes.dropped == 1
    assert any("dropped 1 queued dialog writes" in text for text in ksr.logged("notice"))
    node.locations.recover()
    node.tick(S.redis.redis_backoff_initial_ms)
    assert {name for _, name in node.locations.records} == {"call-1", "call-2"}


def test_sync_tick_dialog_flush_and_lookup_fail_independently(
    node: Node, ksr: FakeKsr, monkeypatch: pytest.MonkeyPatch
):
    """Issue 11: whatever one of them raises (here errors no store raises: a bug, a record
    that slipped through), the other two go on, and it is logged once."""
    node.pool(A, B)
    node.route("INVITE")
    node.reply(200, to_tag="callee-tag")
    ack(node, node.tried[0])
    monkeypatch.setattr(node.balancer.sync, "tick", lambda: 1 / 0)
    node.tick(100)
    node.tick(100)
    assert (DIALOG, CALL_ID) in node.locations.records  # flushed while the tick fails

    def deep(*_: object) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(node.locations, "lookup", deep)
    # Another callee: the first INVITE's lookup is in the node's cache.
    node.route("INVITE", ALICE, call_id="call-2@198.51.100.7")
    node.route("INVITE", ALICE, call_id="call-3@198.51.100.7")
    assert len(node.tried) == 1  # routed by weight
    errors = ksr.logged("err")
    assert sum("sync tick failed" in e for e in errors) == 1
    assert sum("location lookup failed" in e for e in errors) == 1


def test_values_too_long_to_record_are_routed_but_never_recorded(node: Node, ksr: FakeKsr):

    node.pool(A)
    long_call_id = "c" * (S.location.record_call_id_max_chars + 1)
    node.route("INVITE", call_id=long_call_id)
    node.reply(200, to_tag="callee-tag")
    node.route("INVITE", from_tag="f" * (S.location.record_tag_max_chars + 1))
    node.reply(200, to_tag="callee-tag")
    assert ksr.htables[DIALOGS] == {} and ksr.htables[QUEUE] == {}
    long_user = "u" * S.location.record_aor_max_chars
    node.route("REGISTER", "sip:example.com", to=f"sip:{long_user}@example.com")
    assert len(node.tried) == 1 and counters(node)["lookups"] == 2  # the INVITEs' alone
    assert counters(node)["too_long"] == 3


def test_a_200_never_acked_costs_redis_nothing(node: Node, ksr: FakeKsr):
    node.pool(A)
    for call in range(20):
        node.route("INVITE", call_id=f"call-{call}")
        node.reply(200, to_tag="callee-tag")
    node.tick(100)
    assert ksr.htables[QUEUE] == {} and node.locations.records == {}
    assert len(ksr.htables[DIALOGS]) == 20  # this node's copies: 60 s in shared memory


def test_retransmitted_acks_queue_the_record_once(node: Node, ksr: FakeKsr):
    node.pool(A)
    node.route("INVITE")
    node.reply(200, to_tag="callee-tag")
    for _ in range(3):
        ack(node, A)
    assert len(ksr.htables[QUEUE]) == 1 and counters(node)["confirmed"] == 1
    ack(node, A, from_tag="someone-else")  # not this dialog's ACK: nothing more
    assert len(ksr.htables[QUEUE]) == 1
    assert len(location.batched_writes(ksr.htables[QUEUE].items())) == 1  # one write in it


def test_a_workers_writes_of_one_period_share_queue_entries_of_bounded_size(
    node: Node, ksr: FakeKsr
):
    node.pool(A)
    calls = 2 * location.QUEUE_BATCH_WRITES + 1
    for call in range(calls):  # all in one batch period: the fake clock stands still
        node.route("INVITE", call_id=f"call-{call}")
        node.reply(200, to_tag="callee-tag")
        ack(node, A, call_id=f"call-{call}")
    assert len(ksr.htables[QUEUE]) == 3
    assert len(location.batched_writes(ksr.htables[QUEUE].items())) == calls
    node.tick(location.QUEUE_BATCH_MS)  # the period before the previous one only
    assert len(ksr.htables[QUEUE]) == 3 and node.locations.records == {}
    node.tick(location.QUEUE_BATCH_MS)
    assert ksr.htables[QUEUE] == {}
    assert {name for _, name in node.locations.records} == {f"call-{n}" for n in range(calls)}


def test_a_forged_bye_leaves_the_record_and_is_counted(node: Node, ksr: FakeKsr):
    node.pool(A)
    node.route("INVITE")
    node.reply(200, to_tag="callee-tag")
    ack(node, A)
    node.tick(100)
    record = node.locations.records[(DIALOG, CALL_ID)]
    routes = {"Route": f"{node.sealed_route(A)}, <{A};lr>"}
    # On this node: its copy's tags refuse the BYE at once.
    node.route("BYE", to_tag="guessed", headers=routes, source="203.0.113.9")
    assert CALL_ID in ksr.htables[DIALOGS] and ksr.htables[QUEUE] == {}
    # On another node (no copy): the timer process finds other tags in Redis.
    del ksr.htables[DIALOGS][CALL_ID]
    node.route("BYE", to_tag="guessed", headers=routes, source="203.0.113.9")
    node.tick(100)
    assert node.locations.records[(DIALOG, CALL_ID)] == record
    assert edge_counters(ksr)["forged_bye"] == 2
    # The dialog's own BYE, from the callee (tags swapped) through its proxy, deletes it.
    node.route("BYE", from_tag="callee-tag", to_tag="from-tag-1", headers=routes,
               source="10.0.0.1", source_port=5060)  # fmt: skip
    node.tick(100)
    assert node.locations.records == {} and node.locations.sources["198.51.100.7"] == {}


def test_a_source_holds_at_most_dialog_records_per_source(
    ksr: FakeKsr, monkeypatch: pytest.MonkeyPatch
):
    node = Node(ksr, monkeypatch, Settings.of(dialog_records_per_source=2))
    node.pool(A)

    def call(call_id: str, source: str) -> None:
        node.route("INVITE", call_id=call_id, source=source)
        node.reply(200, to_tag="callee-tag")
        ack(node, A, call_id=call_id, source=source)

    for number in range(3):
        call(f"greedy-{number}", "203.0.113.9")
    call("other", "198.51.100.7")
    node.tick(100)
    assert {name for _, name in node.locations.records} == {"greedy-0", "greedy-1", "other"}
    assert edge_counters(ksr)["dialog_record_capped"] == 1
    routes = {"Route": f"{node.sealed_route(A, call_id='greedy-0')}, <{A};lr>"}
    node.route("BYE", call_id="greedy-0", to_tag="callee-tag", headers=routes)
    call("greedy-3", "203.0.113.9")  # room again
    node.tick(100)
    assert {name for _, name in node.locations.records} == {"greedy-1", "greedy-3", "other"}


def test_the_timers_own_writes_bound_their_size_and_are_encoded_once(
    ksr: FakeKsr, monkeypatch: pytest.MonkeyPatch
):
    from counterpoise.kamailio.location import OwnWrites

    encoded: list[str] = []
    encode = location.PendingWrite.encode

    def counted(write: location.PendingWrite) -> str:
        encoded.append(write.name)
        return encode(write)

    monkeypatch.setattr(location.PendingWrite, "encode", counted)
    own = OwnWrites()
    record = Record(A, 1, 2, "f", "t", "198.51.100.7")
    own.add("000000000000001 7 0", 10, location.PendingWrite.setting("c1", record, 1000))
    own.add("000000000000001 7 0", 11, location.PendingWrite("c2", tags=("f", "t")))
    own.add("000000000000002 7 0", 12, location.PendingWrite.setting("c3", record, 1000))
    assert own.entries(encoded=False) == [("000000000000001 7 0", ""), ("000000000000002 7 0", "")]
    assert encoded == [] and own.most_bytes() >= 3 * 40
    entries = own.entries(encoded=True)
    assert own.most_bytes() == location.queue_bytes(entries)
    assert own.entries(encoded=True) == entries and encoded == ["c1", "c2", "c3"]
    assert [write.name for _, write in own.writes(entries[0][0])] == ["c1", "c2"]
    assert [key for key, _ in own.writes(entries[0][0])] == [
        key for key, _ in location.batched_writes(entries[:1])
    ]
    own.remove(entries[0][0])
    assert own.most_bytes() == location.queue_bytes(entries[1:])
    own.remove(entries[1][0])
    assert own.most_bytes() == 0 and own.entries(encoded=True) == []
