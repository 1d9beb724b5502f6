"""Holding requests at the balancer through the fake KSR: suspended while every proxy is
queueing at its limit, resumed in order by the release timer, counted on tm's right branch."""

from __future__ import annotations

import pytest

from counterpoise.core.routing_table import RoutingEntry
from counterpoise.core.settings import Settings
from counterpoise.kamailio import htables

from ..fakes.edge import Node
from ..fakes.ksr import BLIND_BRANCH, FakeKsr

A, B = "sip:10.0.0.1:5060", "sip:10.0.0.2:5060"
S = Settings.of(location_server=False, shed_hold_ms=0)
"""Holding alone: shedding (``core.admission``) is tested in test_kemi_admission.py."""
LIMIT = 2


@pytest.fixture
def node(ksr: FakeKsr, monkeypatch: pytest.MonkeyPatch) -> Node:
    return Node(ksr, monkeypatch, S)


def entry(uri: str, queueing: bool = True, limit: int = LIMIT) -> RoutingEntry:
    """``uri`` in the table, its requests waiting ``saturated_fr_timer_ms`` for a first reply."""
    return RoutingEntry(uri, 1.0, queueing, limit, long_wait=True)


def queueing_pool(node: Node, ksr: FakeKsr) -> None:
    """A and B in the table, queueing, each with an in-flight limit of ``LIMIT``."""
    node.pool(A, B)
    node.publish(entry(A), entry(B))


def fill(node: Node) -> None:
    for _ in range(2 * LIMIT):
        node.route("INVITE")
    assert (node.inflight(A), node.inflight(B)) == (LIMIT, LIMIT)


def test_a_request_is_held_when_every_proxy_is_queueing_at_its_limit(node: Node, ksr: FakeKsr):
    queueing_pool(node, ksr)
    fill(node)
    node.route("INVITE", call_id="held-1")
    assert ksr.relays == []  # suspended: nothing relayed, nothing answered by the route
    assert ksr.sl_replies == []
    assert ksr.called("tmx.t_suspend") == [()]
    assert ksr.fr_timers == (
        S.timers.hold_max_ms + 1000,
        S.timers.hold_max_ms + 1000,
    )  # outlasts the hold
    assert ksr.htables[htables.NODE_COUNTERS.name]["held"] == 1
    # Released once a proxy has room (the sync loop found A completing more), to it, as
    # attempt 1 on tm's branch 1 (branch 0 is the suspended transaction's).
    node.release(10)
    assert ksr.called("tmx.t_continue") == []
    node.publish(entry(A, limit=LIMIT + 1), entry(B))
    node.release(10)
    assert ksr.relays[0] is BLIND_BRANCH
    assert ksr.relays[1]["duri"] == A
    assert ksr.pvs["$ci"] == "held-1"
    assert ksr.relays[1]["on_failure"] == "cp_failure"
    assert node.inflight(A) == LIMIT + 1
    node.reply(200, branch=1)  # counted on its own branch: its in-flight count comes down
    assert node.inflight(A) == LIMIT


def test_ringing_calls_leave_the_proxys_queue_and_hold_nothing(node: Node, ksr: FakeKsr):
    """The limit is on requests a proxy is still working on (no reply but 100 Trying): with
    calls ringing for seconds, in flight as they are, a new request still goes."""
    from counterpoise.kamailio import shared

    queueing_pool(node, ksr)
    for _ in range(2 * LIMIT):
        node.route("INVITE")
        node.reply(100, after_ms=5)
        assert shared.awaiting(node.tried[-1]) >= 1  # 100 Trying: still the proxy's work
        node.reply(180, after_ms=20)
    assert (node.inflight(A), node.inflight(B)) == (LIMIT, LIMIT)
    assert (shared.awaiting(A), shared.awaiting(B)) == (0, 0)
    node.route("INVITE", call_id="new")
    assert ksr.called("tmx.t_suspend") == []
    assert [relay["duri"] in (A, B) for relay in ksr.relays] == [True]  # relayed at once
    node.reply(486, after_ms=10)  # a final reply with no provisional before it
    assert shared.awaiting(node.tried[-1]) == 0


def test_held_requests_are_released_in_order_and_new_ones_queue_behind(node: Node, ksr: FakeKsr):
    queueing_pool(node, ksr)
    fill(node)
    node.route("INVITE", call_id="first")
    # The table now says A is not queueing: A has room for a new request, but one is held
    # already, and a new request queues behind it.
    node.publish(entry(A, queueing=False, limit=LIMIT + 2), entry(B))
    node.route("INVITE", call_id="second")
    assert ksr.relays == []
    released = []
    ksr.routes["cp_release_route"] = lambda msg, ev: (
        released.append(ksr.pvs["$ci"]),
        node.app.cp_release_route(msg, ev),
    )[1]
    node.release(20)
    assert released == ["first", "second"]  # A's two free slots, in the order held
    assert node.inflight(A) == LIMIT + 2


def test_a_request_held_hold_max_ms_goes_to_the_least_loaded_proxy(node: Node, ksr: FakeKsr):
    queueing_pool(node, ksr)
    fill(node)
    node.route("INVITE")
    node.release(S.timers.hold_max_ms - 1)
    assert ksr.called("tmx.t_continue") == []
    node.release(1)
    assert len(ksr.relays) == 2 and ksr.relays[1]["duri"] in (A, B)
    assert ksr.htables[htables.NODE_COUNTERS.name]["held_overdue"] == 1


def test_a_request_cancelled_while_held_is_answered_487(node: Node, ksr: FakeKsr):
    queueing_pool(node, ksr)
    fill(node)
    node.route("INVITE")
    ksr.returns["tm.t_is_canceled"] = 1
    node.release(S.timers.hold_max_ms)
    assert ksr.t_replies == [(487, "Request Terminated")]
    assert ksr.relays == [BLIND_BRANCH]


def test_a_resumed_request_fails_over_from_its_own_branch(node: Node, ksr: FakeKsr):
    queueing_pool(node, ksr)
    fill(node)
    node.route("INVITE")
    node.release(S.timers.hold_max_ms)
    first = ksr.relays[1]["duri"]
    node.fail(408, after_ms=S.timers.saturated_fr_timer_ms, timeout=True, replied=False)
    assert ksr.relays[2]["duri"] == ({A, B} - {first}).pop()
    assert node.inflight(first) == LIMIT  # the timed-out attempt came out of flight


def test_with_holding_off_no_request_is_held(ksr: FakeKsr, monkeypatch: pytest.MonkeyPatch):
    node = Node(ksr, monkeypatch, Settings.of(location_server=False, hold_queue_ms=0))
    queueing_pool(node, ksr)
    fill(node)
    node.route("INVITE")
    assert len(ksr.relays) == 1
    assert ksr.called("tmx.t_suspend") == []


def test_a_refused_suspend_relays_at_once(node: Node, ksr: FakeKsr):
    queueing_pool(node, ksr)
    fill(node)
    ksr.returns["tmx.t_suspend"] = -1
    node.route("INVITE")
    assert len(ksr.relays) == 1
    assert ksr.htables[htables.HELD.name].get(htables.HELD_TAIL, 0) == 0


def test_an_entry_its_worker_never_wrote_is_skipped_after_a_grace(node: Node, ksr: FakeKsr):
    from counterpoise.kamailio import holding

    queueing_pool(node, ksr)
    fill(node)
    # A worker took a number and died before writing.
    ksr.htables[htables.HELD.name][htables.HELD_TAIL] = 1
    node.route("INVITE", call_id="behind")
    node.release(S.timers.hold_max_ms)  # overdue, yet the hole before it stops the reading
    assert ksr.called("tmx.t_continue") == []
    node.release(holding.UNWRITTEN_GRACE_MS)
    assert ksr.pvs["$ci"] == "behind" and ksr.relays[1]["duri"] in (A, B)
    assert holding.count() == 0
