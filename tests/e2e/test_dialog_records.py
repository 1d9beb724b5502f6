"""Dialog records against a real balancer, as an attacker would try them: a 200 never ACKed
leaves nothing in Redis, a BYE with someone else's tags deletes nothing (on the node that saw
the dialog and on another one), and one caller address holds at most
``dialog_records_per_source`` records."""

from __future__ import annotations

import time
import uuid

import pytest

from counterpoise import processes
from counterpoise.core.location import Record
from counterpoise.store.keys import DIALOG
from counterpoise.store.location import LocationStore
from tests.e2e import sipwire
from tests.e2e.conftest import Bed

pytestmark = pytest.mark.e2e


def answer_as_callee(request: bytes) -> list[bytes | float]:
    """A scripted pool proxy that answers its calls itself: 200 to OPTIONS, INVITE and BYE."""
    if sipwire.method_of(request) in ("OPTIONS", "INVITE", "BYE"):
        return [sipwire.reply(request, 200, "OK", tag="callee")]
    return []


class Dialog:
    """One call from ``caller`` through the balancer at ``to``, with its own tags."""

    def __init__(self, caller: sipwire.Peer, to: sipwire.Address, ruri: str) -> None:
        self.caller, self.to, self.ruri = caller, to, ruri
        self.call_id = f"{uuid.uuid4().hex}@attacker"
        self.from_tag = uuid.uuid4().hex[:10]
        self.route: list[str] = []

    def message(self, method: str, cseq: int, to_tag: str = "", routes: bool = True) -> bytes:
        host, port = self.caller.address
        lines = [
            f"{method} {self.ruri} SIP/2.0",
            f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{uuid.uuid4().hex};rport",
            "Max-Forwards: 70",
            f"From: <sip:caller@example.com>;tag={self.from_tag}",
            "To: <sip:callee@example.com>" + (f";tag={to_tag}" if to_tag else ""),
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:caller@{host}:{port}>",
            *(f"Route: {route}" for route in (self.route if routes else [])),
            "Content-Length: 0",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def invite(self) -> None:
        """INVITE, answered 200 by the callee; the route set is the 200's Record-Route."""
        self.caller.send(self.message("INVITE", 1), self.to)
        answer = self.caller.final_reply()
        assert answer is not None and sipwire.status_of(answer) == 200
        self.route = [value.decode() for value in sipwire.header(answer, "Record-Route")]
        assert self.route, answer

    def ack(self) -> None:
        self.caller.send(self.message("ACK", 1, to_tag="callee"), self.to)

    def bye(self, to_tag: str, to: sipwire.Address | None = None) -> None:
        self.caller.send(self.message("BYE", 2, to_tag=to_tag), to or self.to)
        self.caller.final_reply(2.0)


def pool_of_one_callee(bed: Bed, **overrides: object) -> sipwire.Responder:
    callee = sipwire.Responder(answer_as_callee)
    bed.start_balancer(**overrides)
    bed.store.add(callee.uri, 1.0)
    bed.wait_state(callee.uri, ("up", "slowstart"))
    return callee


def records(bed: Bed) -> dict[str, Record | None]:
    store = LocationStore(bed.store.client, bed.settings.redis.key_prefix)
    return {entry.name: entry.record for entry in store.scan((DIALOG,))}


def balancer(bed: Bed) -> sipwire.Address:
    return ("127.0.0.1", bed.balancer_port)


def test_a_200_never_acked_leaves_nothing_in_redis(bed: Bed) -> None:
    callee = pool_of_one_callee(bed)
    caller = sipwire.Peer("127.0.0.21")
    dialogs = [Dialog(caller, balancer(bed), callee.uri) for _ in range(20)]
    for dialog in dialogs:
        dialog.invite()
    processes.wait_for(
        lambda: bed.counters("cploc").get("dialogs", 0) == 20, 5, "the 20 dialogs counted"
    )
    assert records(bed) == {}
    assert bed.counters("cploc").get("confirmed", 0) == 0

    dialogs[0].ack()  # its caller confirms one: that one is recorded
    found = processes.wait_for(lambda: records(bed), 5, "the confirmed dialog's record")
    record = found[dialogs[0].call_id]
    assert set(found) == {dialogs[0].call_id}
    assert record is not None and record.source == "127.0.0.21"
    caller.close()
    callee.close()


def test_a_bye_with_other_tags_deletes_no_record_on_any_node(bed: Bed) -> None:
    """The attacker saw the INVITE (Call-ID, From tag) but not the callee's tag."""
    callee = pool_of_one_callee(bed)
    first = balancer(bed)
    caller = sipwire.Peer("127.0.0.22")
    dialog = Dialog(caller, first, callee.uri)
    dialog.invite()
    dialog.ack()
    record = processes.wait_for(lambda: records(bed).get(dialog.call_id), 5, "the record")

    dialog.bye(to_tag="guessed")  # the node that saw the dialog: its copy refuses it
    bed.start_balancer(name="balancer2")  # a node without a copy: Redis's record refuses it
    second = balancer(bed)
    processes.wait_for(
        lambda: (
            callee.uri
            in bed.store.node_weights(int(time.time() * 1000), 10_000).get(
                bed.settings.node.node_name(), {}
            )
        ),
        15,
        "the second node to route to the pool",
    )
    dialog.route = [route.replace(f":{first[1]}", f":{second[1]}") for route in dialog.route]
    dialog.bye(to_tag="guessed", to=second)
    nodes = ("balancer", "balancer2")
    processes.wait_for(
        lambda: [bed.counters("cpedge", node).get("forged_bye", 0) for node in nodes] == [1, 1],
        5,
        "each node to count its forged BYE",
    )
    assert records(bed) == {dialog.call_id: record}

    dialog.bye(to_tag="callee", to=second)  # its own BYE, through either node
    processes.wait_for(lambda: records(bed) == {}, 5, "the record deleted by its own BYE")
    caller.close()
    callee.close()


def test_one_caller_address_holds_at_most_its_cap_of_records(bed: Bed) -> None:
    callee = pool_of_one_callee(bed, dialog_records_per_source=3)
    greedy, other = sipwire.Peer("127.0.0.23"), sipwire.Peer("127.0.0.24")
    dialogs = [Dialog(greedy, balancer(bed), callee.uri) for _ in range(5)]
    dialogs.append(Dialog(other, balancer(bed), callee.uri))
    for dialog in dialogs:
        dialog.invite()
        dialog.ack()
    # Each record written, or refused by the cap, is counted: wait for all six outcomes.
    processes.wait_for(
        lambda: len(records(bed)) + bed.counters("cpedge").get("dialog_record_capped", 0) >= 6,
        5,
        "the six confirmed dialogs recorded or capped",
    )
    found = records(bed)
    sources = sorted(record.source for record in found.values() if record is not None)
    assert sources == ["127.0.0.23"] * 3 + ["127.0.0.24"]
    assert bed.counters("cpedge").get("dialog_record_capped", 0) == 2
    # Every call went on all the same: the capped ones end by their route set.
    for dialog in dialogs:
        dialog.bye(to_tag="callee")
    processes.wait_for(lambda: records(bed) == {}, 5, "every record deleted")
    for peer in (greedy, other, callee):
        peer.close()
