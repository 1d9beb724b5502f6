"""The timer process's side of the native in-dialog route's queue of dialog events
(``kamailio/dialog_events.py``): the lines ``embed/counterpoise-dialog.cfg`` writes for a
sealed ACK and a relayed BYE, written here as the route writes them, confirm and end dialog
records at the next tick as a worker's Python did."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from counterpoise.core import location
from counterpoise.core.settings import Settings
from counterpoise.kamailio import htables
from counterpoise.store.keys import DIALOG

from ..fakes.edge import Node, edge_counters
from ..fakes.ksr import FakeKsr

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


def test_a_queued_ack_confirms_the_record_at_the_next_tick(node: Node, ksr: FakeKsr):
    queue(ksr, f"confirm from-tag-1 callee-tag 198.51.100.7 {CALL_ID}")
    node.tick(100)  # the events drained, the confirmed record queued for Redis
    assert ksr.htables[EVENTS] == {}
    assert ksr.htables[htables.ROUTING.name][htables.DIALOG_EVENT_READ] == 1
    assert location.Record.from_local(ksr.htables[DIALOGS][CALL_ID]).source == "198.51.100.7"
    node.tick(100)
    node.tick(100)
    record, _ = node.locations.records[(DIALOG, CALL_ID)]
    assert (record.proxy, record.source) == (A, "198.51.100.7")


def test_a_queued_ack_of_other_tags_confirms_nothing(node: Node, ksr: FakeKsr):
    queue(ksr, f"confirm someone-else callee-tag 198.51.100.7 {CALL_ID}", "garbage")
    node.tick(100)
    node.tick(100)
    assert ksr.htables[EVENTS] == {} and node.locations.records == {}
    assert location.Record.from_local(ksr.htables[DIALOGS][CALL_ID]).source == ""


def test_a_queued_bye_ends_the_record_and_one_of_other_tags_is_counted_forged(
    node: Node, ksr: FakeKsr
):
    queue(ksr, f"confirm from-tag-1 callee-tag 198.51.100.7 {CALL_ID}")
    node.tick(100)
    node.tick(100)
    assert (DIALOG, CALL_ID) in node.locations.records
    queue(ksr, f"end guessed callee-tag {CALL_ID}")
    node.tick(100)
    assert edge_counters(ksr)["forged_bye"] == 1 and CALL_ID in ksr.htables[DIALOGS]
    queue(ksr, f"end callee-tag from-tag-1 {CALL_ID}")  # the callee's BYE, tags swapped
    node.tick(100)
    node.tick(100)
    assert CALL_ID not in ksr.htables[DIALOGS] and node.locations.records == {}
    assert ksr.htables[htables.ROUTING.name][htables.DIALOG_EVENT_READ] == 3


def test_events_are_parsed_with_the_call_id_last():
    event = location.DialogEvent.parse("confirm f t 2001:db8::1 call id with spaces")
    assert event == location.DialogEvent("call id with spaces", "f", "t", "2001:db8::1")
    assert event.confirms
    ended = location.DialogEvent.parse("end f t c")
    assert ended == location.DialogEvent("c", "f", "t") and not ended.confirms
    assert location.DialogEvent.parse("end f t") is None
    assert location.DialogEvent.parse("confirm  t 1.2.3.4 c") is None
    assert location.DialogEvent.parse("other f t c") is None


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
    ksr.htables[EVENTS][str(-(2**31))] = f"end callee-tag from-tag-1 {CALL_ID}"
    ksr.htables[EVENTS][str(2**31 - 1)] = f"confirm from-tag-1 callee-tag 198.51.100.7 {CALL_ID}"
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
        queue(ksr, f"confirm from-tag-1 callee-tag 198.51.100.7 {call_id}")
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
    queue(ksr, f"confirm from-tag-1 callee-tag 198.51.100.7 {CALL_ID}")
    node.tick(100)
    node.tick(100)
    node.tick(100)
    record, _ = node.locations.records[(DIALOG, CALL_ID)]
    assert record.source == "198.51.100.7"
