"""The timer process's side of the native in-dialog route's queue of dialog events
(``kamailio/dialog_events.py``): the lines ``embed/counterpoise-dialog.cfg`` writes for a
sealed ACK and a relayed BYE, written here as the route writes them, confirm and end dialog
records at the next tick as a worker's Python did."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from counterpoise.core import location
from counterpoise.core.settings import Settings
from counterpoise.core.tally import Tally
from counterpoise.kamailio import htables
from counterpoise.store.keys import DIALOG

from ..fakes.edge import Node, edge_counters
from ..fakes.ksr import FakeKsr
from . import test_queued_reply

A = "sip:10.0.0.1:5060"
CALL_ID = "call-1@198.51.100.7"
EVENTS, DIALOGS = htables.DIALOG_EVENTS.name, htables.DIALOGS.name
DIALOG_ROUTES = Path(__file__).resolve().parents[2] / "embed" / "counterpoise-dialog.cfg"


@pytest.fixture
def node(ksr: FakeKsr, monkeypatch: pytest.MonkeyPatch) -> Node:
    node = Node(ksr, monkeypatch, Settings())
    node.pool(A)
    node.route("INVITE")
    node.reply(200, to_tag="callee-tag")
    return node


def queue(ksr: FakeKsr, *lines: str) -> None:
    """Lines in the next slots, as route CP_DIALOG_EVENT writes them."""
    routing = ksr.htables[htables.ROUTING.name]
    for line in lines:
        routing[htables.DIALOG_EVENT_SEQ] += 1
        ksr.htables[EVENTS][str(routing[htables.DIALOG_EVENT_SEQ])] = line


def hexed(value: str | bytes) -> str:
    """An id as the in-dialog route writes it in a line: hex after an "x"."""
    raw = value.encode() if isinstance(value, str) else value
    return "x" + raw.hex()


def confirm(from_tag: str, to_tag: str, source: str, call_id: str | bytes) -> str:
    """The line of a sealed ACK, as route CP_IN_DIALOG writes it."""
    return f"confirm {hexed(from_tag)} {hexed(to_tag)} {source} {hexed(call_id)}"


def end(from_tag: str, to_tag: str, call_id: str | bytes) -> str:
    """The line of a relayed BYE, as route CP_IN_DIALOG writes it."""
    return f"end {hexed(from_tag)} {hexed(to_tag)} {hexed(call_id)}"


def test_a_queued_ack_confirms_the_record_at_the_next_tick(node: Node, ksr: FakeKsr):
    queue(ksr, confirm("from-tag-1", "callee-tag", "198.51.100.7", CALL_ID))
    node.tick(100)  # the events drained, the confirmed record queued for Redis
    assert ksr.htables[EVENTS] == {}
    assert ksr.htables[htables.ROUTING.name][htables.DIALOG_EVENT_READ] == 1
    assert location.Record.from_local(ksr.htables[DIALOGS][CALL_ID]).source == "198.51.100.7"
    node.tick(100)
    node.tick(100)
    record, _ = node.locations.records[(DIALOG, CALL_ID)]
    assert (record.proxy, record.source) == (A, "198.51.100.7")


def test_a_queued_ack_of_other_tags_confirms_nothing(node: Node, ksr: FakeKsr):
    queue(ksr, confirm("someone-else", "callee-tag", "198.51.100.7", CALL_ID), "garbage")
    node.tick(100)
    node.tick(100)
    assert ksr.htables[EVENTS] == {} and node.locations.records == {}
    assert location.Record.from_local(ksr.htables[DIALOGS][CALL_ID]).source == ""


def test_a_queued_bye_ends_the_record_and_one_of_other_tags_is_counted_forged(
    node: Node, ksr: FakeKsr
):
    queue(ksr, confirm("from-tag-1", "callee-tag", "198.51.100.7", CALL_ID))
    node.tick(100)
    node.tick(100)
    assert (DIALOG, CALL_ID) in node.locations.records
    queue(ksr, end("guessed", "callee-tag", CALL_ID))
    node.tick(100)
    assert edge_counters(ksr)["forged_bye"] == 1 and CALL_ID in ksr.htables[DIALOGS]
    queue(ksr, end("callee-tag", "from-tag-1", CALL_ID))  # the callee's BYE, tags swapped
    node.tick(100)
    node.tick(100)
    assert CALL_ID not in ksr.htables[DIALOGS] and node.locations.records == {}
    assert ksr.htables[htables.ROUTING.name][htables.DIALOG_EVENT_READ] == 3


def test_events_are_parsed_from_their_hex_ids():
    event = location.DialogEvent.parse(confirm("f", "t", "2001:db8::1", "call id with spaces"))
    assert event == location.DialogEvent("call id with spaces", "f", "t", "2001:db8::1")
    assert event.confirms
    ended = location.DialogEvent.parse(end("f", "t", "c"))
    assert ended == location.DialogEvent("c", "f", "t") and not ended.confirms
    assert location.DialogEvent.parse(end("f", "t", "c").rsplit(" ", 1)[0]) is None
    assert location.DialogEvent.parse(confirm("f", "", "1.2.3.4", "c")) is None
    assert location.DialogEvent.parse(confirm("f", "t", "", "c")) is None
    assert location.DialogEvent.parse("other x66 x74 x63") is None
    assert location.DialogEvent.parse("end f t c") is None  # ids not hex
    assert location.DialogEvent.parse("end x66 x74 x6") is None  # an odd hex digit


def test_an_id_that_is_not_utf8_is_read_as_none_and_counted(node: Node, ksr: FakeKsr):
    """A caller's Call-ID may hold any byte: its events are read, the id as a worker's
    Python reads it (none), and the events after it are handled."""
    event = location.DialogEvent.parse(confirm("f", "t", "1.2.3.4", b"\xff\xfe-1"))
    assert event == location.DialogEvent(None, "f", "t", "1.2.3.4", not_utf8=1)
    queue(
        ksr,
        confirm("from-tag-1", "callee-tag", "198.51.100.7", b"\xff\xfe-1"),
        end("from-tag-1", "callee-tag", b"\xc3\x28"),
        confirm("from-tag-1", "callee-tag", "198.51.100.7", CALL_ID),
    )
    node.tick(100)
    node.tick(100)
    assert ksr.htables[EVENTS] == {}
    assert (DIALOG, CALL_ID) in node.locations.records
    assert edge_counters(ksr)["not_utf8"] == 2


def test_the_native_route_queues_in_the_slots_and_bounds_the_timer_publishes():
    """Route CP_DIALOG_EVENT, through CP_QUEUE_EVENT, counts its slots, bounds them and
    writes its line under the names the timer process creates and reads."""
    body = "".join(
        re.findall(rf"^route\[{name}\] \{{\n(.*?)^\}}", DIALOG_ROUTES.read_text(), re.M | re.S)[0]
        for name in ("CP_DIALOG_EVENT", "CP_QUEUE_EVENT")
    )
    read = set(re.findall(rf"\$sht\w*\({htables.ROUTING.name}=>(\w+)\)", body))
    assert read == {
        htables.DIALOG_EVENT_SEQ,
        htables.DIALOG_EVENT_READ,
        htables.DIALOG_EVENTS_MAX,
        htables.DIALOG_EVENT_MAX_CHARS,
    }
    assert f"$shtinc({htables.ROUTING.name}=>{htables.DIALOG_EVENT_SEQ})" in body
    assert f"$sht({EVENTS}=>$var(cp_slot)) = $var(cp_event);" in body
    assert "$shtinc(cpedge=>dialog_events_dropped)" in body
    assert "dialog_events_dropped" in htables.NATIVE_EDGE_COUNTERS


def test_slots_are_read_in_order_across_the_counters_wrap(node: Node, ksr: FakeKsr):
    """The route's slot counter wraps to negative; the slots past the last read still come
    in the order they were written: here a confirm, then its BYE, which ends the record."""
    from counterpoise.kamailio.dialog_events import DialogEvents, QueuedReplies

    assert node.balancer.location is not None
    events = DialogEvents(node.balancer.location, QueuedReplies(lambda: 1000))
    last = 2**31 - 2
    ksr.htables[EVENTS][str(last)] = "junk"
    events.drain()  # a key that is no event: removed; the last read moves on
    assert ksr.htables[htables.ROUTING.name][htables.DIALOG_EVENT_READ] == last
    ksr.htables[EVENTS][str(-(2**31))] = end("callee-tag", "from-tag-1", CALL_ID)
    ksr.htables[EVENTS][str(2**31 - 1)] = confirm(
        "from-tag-1", "callee-tag", "198.51.100.7", CALL_ID
    )
    events.drain()
    # Confirmed first (a BYE first would leave no record to confirm), then ended.
    counts = location.sum_counters(dict(ksr.htables[htables.LOCATION_COUNTERS.name]))
    assert counts["confirmed"] == 1
    assert CALL_ID not in ksr.htables[DIALOGS] and ksr.htables[EVENTS] == {}
    assert ksr.htables[htables.ROUTING.name][htables.DIALOG_EVENT_READ] == -(2**31)


def test_the_timer_queues_the_writes_it_drains_in_its_own_memory_under_the_queues_bound(
    node: Node, ksr: FakeKsr, monkeypatch: pytest.MonkeyPatch
):
    """The writes of drained events cost no shared-memory write; with Redis down they wait,
    and the oldest go first past ``dialog_queue_max_bytes``, as a worker's queued ones."""
    node.tick()  # the timer's writer exists from the first tick
    node.locations.fail()
    writes = node.balancer.dialog_writes
    assert writes is not None
    for call in range(1, 4):
        call_id = f"call-{call}"
        node.route("INVITE", call_id=call_id)
        node.reply(200, to_tag="callee-tag")
        queue(ksr, confirm("from-tag-1", "callee-tag", "198.51.100.7", call_id))
        node.tick(location.QUEUE_BATCH_MS)  # each call's write in a batch of its own
    assert ksr.htables[htables.DIALOG_WRITES.name] == {}
    two_newest = sorted(writes.own.entries(encoded=True))[1:]
    cap = sum(len(key) + len(text) for key, text in two_newest)
    monkeypatch.setattr(writes, "_settings", Settings.of(dialog_queue_max_bytes=cap))
    node.tick(100)
    assert writes.dropped == 1 and len(writes.own.entries(encoded=False)) == 2
    node.locations.recover()
    node.tick(Settings().redis.redis_backoff_initial_ms)
    assert {name for _, name in node.locations.records} == {"call-2", "call-3"}
    assert writes.own.entries(encoded=False) == [] and ksr.htables[htables.DIALOG_WRITES.name] == {}


def test_far_from_the_queues_bound_the_timers_writes_are_never_encoded(
    node: Node, ksr: FakeKsr, monkeypatch: pytest.MonkeyPatch
):
    def no_encoding(write: location.PendingWrite) -> str:
        raise AssertionError("encoded")

    monkeypatch.setattr(location.PendingWrite, "encode", no_encoding)
    queue(ksr, confirm("from-tag-1", "callee-tag", "198.51.100.7", CALL_ID))
    node.tick(100)
    node.tick(100)
    node.tick(100)
    record, _ = node.locations.records[(DIALOG, CALL_ID)]
    assert record.source == "198.51.100.7"


@pytest.fixture
def apart(ksr: FakeKsr, monkeypatch: pytest.MonkeyPatch) -> Node:
    """A node whose timer process has a pid of its own, as in Kamailio: its objects made at
    its first tick under it, so its tallies are keys of its own."""
    node = Node(ksr, monkeypatch, Settings())
    worker_pid = os.getpid
    with monkeypatch.context() as timer:
        timer.setattr(os, "getpid", lambda: worker_pid() + 1)
        node.pool(A)
    return node


def reply_line(**values: Any) -> str:
    """Route CP_FINAL's line of a 2xx from A."""
    return test_queued_reply.line(proxy=A, **values)


def location_counts(ksr: FakeKsr) -> dict[str, int]:
    return location.sum_counters(dict(ksr.htables[htables.LOCATION_COUNTERS.name]))


def test_a_queued_reply_counts_its_outcome_in_the_timers_own_tally(apart: Node, ksr: FakeKsr):
    """Route CP_FINAL's 200 after a 100 at 1 ms and a 180 at 4 ms, with the loads of the
    provisional replies and its own: counted as a worker's Python counts it."""
    before = apart.totals().get(A, Tally())
    loads, load = b"tx=1;workers=4;active=1|junk", b"tx=3;workers=4;active=3"
    queue(ksr, reply_line(first=4, final=30, trying=1, loads=loads, load=load))
    apart.tick(100)
    assert ksr.htables[EVENTS] == {}
    assert apart.totals()[A] - before == Tally(
        requests_ok=1,
        first_reply_ms_sum=4,
        final_reply_ms_sum=30,
        trying_ms_sum=1,
        load_samples=2,
        load_milli_sum=250 + 750,
        load_headers_rejected=1,
    )
    assert "junk" in ksr.htables[htables.REJECTIONS.name][A]
    timer_keys = [key for key in ksr.htables[htables.TALLIES.name] if key.endswith(A)]
    assert len(timer_keys) == 1  # nothing routed through the worker's Python: the timer's


def test_a_queued_reply_that_never_rang_is_timed_to_its_final_reply_capped(
    apart: Node, ksr: FakeKsr
):
    penalty_ms = int(Settings().latency.failure_penalty_ms)
    before = apart.totals().get(A, Tally())
    queue(ksr, reply_line(first=None, final=penalty_ms + 5000, trying=None))
    apart.tick(100)
    assert apart.totals()[A] - before == Tally(
        requests_ok=1, first_reply_ms_sum=penalty_ms, final_reply_ms_sum=penalty_ms + 5000
    )


def recorded_once(node: Node, ksr: FakeKsr, before: dict[str, int]) -> None:
    """Call-9's record counted once since ``before`` (started, confirmed), and in Redis
    with its caller's address after the timer's flush."""
    after = location_counts(ksr)
    for name in ("dialogs", "writes", "confirmed"):
        assert after[name] == before.get(name, 0) + 1, name
    node.tick(100)
    node.tick(100)
    stored, _ = node.locations.records[(DIALOG, "call-9")]
    assert (stored.proxy, stored.source) == (A, "198.51.100.7")


def test_a_queued_2xx_starts_its_dialog_record_before_its_ack_confirms_it(node: Node, ksr: FakeKsr):
    """The 2xx's slot comes before its ACK's: one drain starts the record, then confirms
    it, and Redis gets it; the record's counters as a worker's."""
    before = location_counts(ksr)
    ksr.htables[DIALOGS]["call-9"] = native_copy(A, b"from-9", b"to-9")  # as CP_FINAL does
    queue(
        ksr,
        reply_line(dialog=(b"from-9", b"to-9", b"call-9")),
        confirm("from-9", "to-9", "198.51.100.7", "call-9"),
    )
    node.tick(100)
    record = location.Record.from_local(ksr.htables[DIALOGS]["call-9"])
    assert record is not None
    assert (record.proxy, record.from_tag, record.to_tag, record.source) == (
        A,
        "from-9",
        "to-9",
        "198.51.100.7",
    )
    recorded_once(node, ksr, before)


def test_a_queued_2xx_of_a_call_id_too_long_to_record_is_counted_and_its_outcome_kept(
    apart: Node, ksr: FakeKsr
):
    longest = Settings().location.record_call_id_max_chars
    before, outcomes = location_counts(ksr), apart.totals().get(A, Tally()).requests_ok
    queue(ksr, reply_line(dialog=(b"f", b"t", b"c" * (longest + 1))))
    apart.tick(100)
    assert location_counts(ksr)["too_long"] == before.get("too_long", 0) + 1
    assert "c" * (longest + 1) not in ksr.htables[DIALOGS]
    assert apart.totals()[A].requests_ok == outcomes + 1


def test_values_not_utf8_are_counted_and_the_rest_of_the_reply_kept(apart: Node, ksr: FakeKsr):
    before = apart.totals().get(A, Tally())
    queue(ksr, reply_line(load=b"active=\xff", dialog=(b"f", b"t", b"call-\xff")))
    apart.tick(100)
    delta = apart.totals()[A] - before
    assert (delta.requests_ok, delta.load_headers_rejected, delta.final_reply_ms_sum) == (1, 1, 30)
    assert edge_counters(ksr)["not_utf8"] == 2
    assert ksr.htables[EVENTS] == {}


def test_a_queued_line_that_is_no_event_is_counted_and_removed(node: Node, ksr: FakeKsr):
    queue(ksr, "reply 1 2 3", "reply - 30 - - - " + A + " xzz x x", "confirm")
    node.tick(100)
    assert ksr.htables[EVENTS] == {}
    from counterpoise.kamailio.dialog_events import UNREADABLE

    assert edge_counters(ksr)[UNREADABLE] == 3


def test_the_timer_publishes_what_the_reply_route_reads(
    ksr: FakeKsr, monkeypatch: pytest.MonkeyPatch
):
    for settings, records in ((Settings(), 1), (Settings.of(dialog_record_ttl_ms=0), 0)):
        node = Node(ksr, monkeypatch, settings)
        node.pool(A)
        routing = ksr.htables[htables.ROUTING.name]
        assert routing[htables.DIALOG_RECORDS] == records
        # 64 + 512 + 2 * (512 + 256 + 2 * 128): the settings' default bounds of a record.
        assert routing[htables.REPLY_EVENT_MAX_CHARS] == 2624


def native_copy(
    proxy: str, from_tag: bytes, to_tag: bytes, wall_ms: int = 1_700_000_000_123
) -> str:
    """This node's copy of a dialog record as route CP_FINAL writes it."""
    seconds, ms = divmod(wall_ms, 1000)
    return f"n {proxy} {seconds} {ms * 1000 + 456} x{from_tag.hex()} x{to_tag.hex()}"


def test_an_ack_before_the_tick_confirms_the_copy_the_reply_route_wrote(node: Node, ksr: FakeKsr):
    """A request right after the 2xx (here an ACK Python judges: no sealed Route) finds the
    copy CP_FINAL wrote at once; the timer then keeps the confirmed copy and counts it."""
    ksr.htables[DIALOGS]["call-9"] = native_copy(A, b"from-9", b"to-9")
    queue(ksr, reply_line(dialog=(b"from-9", b"to-9", b"call-9")))
    before = location_counts(ksr)
    node.route("ACK", to_tag="to-9", call_id="call-9", from_tag="from-9")
    confirmed = location.Record.from_local(ksr.htables[DIALOGS]["call-9"])
    assert confirmed is not None and confirmed.source == "198.51.100.7"
    assert confirmed.since_ms == 1_700_000_000_123
    assert confirmed.expires_ms == 1_700_000_000_123 + Settings().location.dialog_record_ttl_ms
    node.tick(100)
    assert location.Record.from_local(ksr.htables[DIALOGS]["call-9"]) == confirmed
    recorded_once(node, ksr, before)


def test_the_timer_removes_the_copy_of_a_dialog_too_long_to_record(node: Node, ksr: FakeKsr):
    long_tag = b"t" * (Settings().location.record_tag_max_chars + 1)
    ksr.htables[DIALOGS]["call-9"] = native_copy(A, b"from-9", long_tag)
    queue(ksr, reply_line(dialog=(b"from-9", long_tag, b"call-9")))
    before = location_counts(ksr).get("too_long", 0)
    node.tick(100)
    assert "call-9" not in ksr.htables[DIALOGS]
    assert location_counts(ksr)["too_long"] == before + 1
