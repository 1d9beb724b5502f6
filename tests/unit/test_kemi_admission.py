"""Shedding through the fake KSR: a full pool answers 503 with Retry-After at once, past
``shed_hold_ms`` of held backlog, and holds instead while a proxy may come back."""

from __future__ import annotations

import pytest

from counterpoise.core.routing_table import RoutingEntry
from counterpoise.core.settings import Settings
from counterpoise.kamailio import htables

from ..fakes.edge import Node
from ..fakes.ksr import FakeKsr

A, B = "sip:10.0.0.1:5060", "sip:10.0.0.2:5060"
S = Settings.of(location_server=False, hold_queue_ms=500, shed_hold_ms=100, shed_retry_after_s=2)
LIMIT = 5
"""Two proxies at 5 in flight each: the pool drains 10 requests in 500 ms, 2 in 100 ms."""


@pytest.fixture
def node(ksr: FakeKsr, monkeypatch: pytest.MonkeyPatch) -> Node:
    return Node(ksr, monkeypatch, S)


def full_pool(node: Node, *entries: RoutingEntry) -> None:
    node.pool(A, B)
    node.publish(*(entries or (entry(A), entry(B))))
    for _ in range(2 * LIMIT):
        node.route("INVITE")
    assert (node.inflight(A), node.inflight(B)) == (LIMIT, LIMIT)


def entry(uri: str, weight: float = 1.0, returning: bool = False) -> RoutingEntry:
    return RoutingEntry(uri, weight, True, LIMIT, long_wait=False, returning=returning)


def counters(ksr: FakeKsr) -> dict:
    return ksr.htables[htables.NODE_COUNTERS.name]


def test_past_shed_hold_ms_of_backlog_a_new_request_gets_503_at_once(node: Node, ksr: FakeKsr):
    full_pool(node)
    node.route("INVITE", call_id="held-1")
    node.route("INVITE", call_id="held-2")
    assert ksr.called("tmx.t_suspend") == [(), ()]
    assert ksr.sl_replies == []
    node.route("INVITE", call_id="shed")
    assert ksr.sl_replies == [(503, "Over Capacity")]
    assert ksr.reply_headers == ["Retry-After: 2\r\n"]
    assert len(ksr.called("tmx.t_suspend")) == 2  # neither held nor relayed
    assert ksr.relays == [] and (node.inflight(A), node.inflight(B)) == (LIMIT, LIMIT)
    assert counters(ksr)["shed"] == 1 and counters(ksr)["held"] == 2


def test_a_pool_with_room_sheds_nothing(node: Node, ksr: FakeKsr):
    node.pool(A, B)
    node.publish(entry(A), entry(B))
    for _ in range(2 * LIMIT):
        node.route("INVITE")
        assert ksr.sl_replies == [(100, "Trying")] and len(ksr.relays) == 1  # no 503
    assert node.inflight(A) + node.inflight(B) == 2 * LIMIT
    assert counters(ksr)["shed"] == 0


def test_while_a_proxy_may_come_back_the_excess_is_held(node: Node, ksr: FakeKsr):
    full_pool(node, entry(A), entry(B))
    node.publish(entry(A), entry(B), entry("sip:10.0.0.3:5060", weight=0.0, returning=True))
    for _ in range(5):
        node.route("INVITE")
    assert ksr.sl_replies == []
    assert len(ksr.called("tmx.t_suspend")) == 5


def test_in_dialog_requests_are_never_shed(node: Node, ksr: FakeKsr):
    full_pool(node)
    for _ in range(3):
        node.route("INVITE")
    replies = len(ksr.sl_replies)
    node.route("BYE", to_tag="t1")
    assert (503, "Over Capacity") not in ksr.sl_replies[replies:]


def test_a_node_short_of_cpu_sheds_its_published_share_of_new_requests(node: Node, ksr: FakeKsr):
    from counterpoise.kamailio import shared

    node.pool(A, B)
    node.publish(entry(A), entry(B))
    ksr.htables[htables.ROUTING.name][htables.NODE_SHED_PERCENT] = 100
    shared.bump_version()  # as the timer publishes it
    node.route("INVITE")
    assert ksr.sl_replies == [(503, "Over Capacity")]
    assert ksr.reply_headers == ["Retry-After: 2\r\n"]
    assert counters(ksr)["shed_node"] == 1 and node.inflight(A) + node.inflight(B) == 0
    ksr.htables[htables.ROUTING.name][htables.NODE_SHED_PERCENT] = 0
    shared.bump_version()
    node.route("INVITE")
    assert node.inflight(A) + node.inflight(B) == 1


def test_the_timer_publishes_the_share_from_the_sockets_backlog(
    ksr: FakeKsr, monkeypatch: pytest.MonkeyPatch
):
    from counterpoise.kamailio import node_load, shared

    settings = Settings.of(listen="udp:127.0.0.1:5060", shed_node_backlog_kb=1)
    backlog = "header\n 1: 0100007F:13C4 00000000:0000 07 00000000:00000800 00 0 0 0 0 1 2 0 0\n"
    monkeypatch.setattr(node_load, "_read", lambda path: backlog if path.endswith("udp") else "")
    load, view = node_load.NodeLoad(settings), shared.WorkerView()

    def shed_percent() -> int:
        view.refresh()  # a worker's read
        return view.node_shed_percent

    load.tick(settings)
    assert shed_percent() == 0  # one tick of backlog: a burst
    load.tick(settings)
    assert shed_percent() == 10
    backlog = ""
    load.tick(settings)
    assert shed_percent() == 5
