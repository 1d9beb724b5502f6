"""The edge's trust rules as the routes apply them (issue 10), run through the fake KSR:
direction, signals only from the proxies, hostile bytes, flood limits, guarded hooks."""

from __future__ import annotations

import pytest

from counterpoise.core import stray
from counterpoise.core.settings import Settings
from counterpoise.core.tally import Tally
from counterpoise.kamailio import htables

from ..fakes.edge import CALLEE, Node, edge_counters
from ..fakes.ksr import FakeKsr

A, B = "sip:10.0.0.1:5060", "sip:10.0.0.2:5060"
GATEWAY = "sip:+19005550100@198.51.100.99:5060"
S = Settings.of(location_server=False)


@pytest.fixture
def node(ksr: FakeKsr, monkeypatch: pytest.MonkeyPatch) -> Node:
    return Node(ksr, monkeypatch, S)


# --- direction ---------------------------------------------------------------------------------


def test_in_dialog_request_from_outside_to_an_outside_hop_is_refused(node: Node, ksr: FakeKsr):
    node.pool(A)
    routes = {"Route": "<sip:192.0.2.1;lr>, <sip:198.51.100.99;lr>"}
    node.route("INVITE", GATEWAY, to_tag="forged", headers=routes)
    assert ksr.relays == [] and ksr.sl_replies == [(403, "Forbidden")]
    node.route("INVITE", GATEWAY, to_tag="forged", headers={"Route": "<sip:192.0.2.1;lr>"})
    assert ksr.relays == [] and ksr.sl_replies == [(403, "Forbidden")]
    node.route("ACK", GATEWAY, to_tag="forged", headers={"Route": "<sip:192.0.2.1;lr>"})
    assert ksr.relays == [] and ksr.sl_replies == []  # an ACK is never answered
    assert edge_counters(ksr)["relay_denied"] == 3


CALLER_HOP = "sip:198.51.100.7:5060;transport=udp"
"""Where the callee's requests go: the address the caller called from (``sealed_route``)."""


def test_in_dialog_request_from_a_pool_proxy_goes_to_the_sealed_caller(node: Node, ksr: FakeKsr):
    node.pool(A)
    routes = {"Route": node.sealed_route(A)}
    node.route("BYE", "sip:alice@198.51.100.99:5062", to_tag="from-tag-1", from_tag="t",
               headers=routes, source="10.0.0.1", source_port=5060)  # fmt: skip
    assert [relay["duri"] for relay in ksr.relays] == [CALLER_HOP] and ksr.sl_replies == []


def test_a_pool_proxy_over_tcp_is_known_by_its_address_alone(node: Node, ksr: FakeKsr):
    """A proxy opens its TCP connections from ephemeral ports: the callee's BYE it relays
    must still go out to the caller. Over UDP it sends from its socket, port and all."""
    node.pool(A)
    bye = {"to_tag": "from-tag-1", "from_tag": "t", "headers": {"Route": node.sealed_route(A)}}
    node.route("BYE", "sip:alice@198.51.100.7:5062", source="10.0.0.1", source_port=41234,
               proto="tcp", **bye)  # fmt: skip
    assert len(ksr.relays) == 1
    node.route("BYE", "sip:alice@198.51.100.7:5062", source="10.0.0.1", source_port=41234,
               proto="udp", **bye)  # fmt: skip
    assert ksr.relays == [] and ksr.sl_replies == [(403, "Forbidden")]


def test_same_host_other_port_is_not_the_pool_proxy(node: Node, ksr: FakeKsr):
    node.pool(A)
    node.route("BYE", "sip:10.0.0.1:5999", to_tag="t", headers={"Route": "<sip:192.0.2.1;lr>"})
    assert ksr.relays == [] and ksr.sl_replies == [(403, "Forbidden")]


def test_dialog_record_naming_a_proxy_out_of_the_pool_is_not_followed(node: Node, ksr: FakeKsr):
    from .test_kemi_routes import FakeLocation

    node.pool(A)
    node.balancer.location = FakeLocation(dialog_proxy="sip:198.51.100.99:5060")
    node.route("INFO", to_tag="t")
    assert ksr.relays == [] and ksr.sl_replies == [(404, "Not here")]
    assert edge_counters(ksr)["relay_denied"] == 1


def test_initial_request_from_outside_loses_its_preloaded_route(node: Node, ksr: FakeKsr):
    node.pool(A)
    node.route("INVITE", headers={"Route": "<sip:192.0.2.1;lr>, <sip:198.51.100.99;lr>"})
    assert ksr.relays[0]["duri"] == A
    assert "Route" in ksr.removed_headers and "X-CP-Load" in ksr.removed_headers
    node.route("INVITE", headers={"Route": "<sip:192.0.2.1;lr>"}, source="10.0.0.1")
    assert "Route" not in ksr.removed_headers  # a pool proxy's route set is its own


# --- signals only from the proxies ---------------------------------------------------------------


def test_reply_from_another_address_counts_nothing_and_ends_the_attempt(node: Node, ksr: FakeKsr):
    node.pool(A)
    node.route("INVITE")
    node.reply(180, after_ms=5, source=("198.51.100.66", 5060))
    assert ksr.dropped  # a forged provisional reply goes no further
    node.reply(200, after_ms=5, source=("198.51.100.66", 5060), headers={"X-CP-Load": "x"})
    assert node.inflight(A) == 0
    assert node.totals() == {}  # no latency, no success, no load header
    assert edge_counters(ksr)["foreign_reply"] == 2


def test_a_provisional_reply_a_peer_passes_on_goes_on_uncounted(
    ksr: FakeKsr, monkeypatch: pytest.MonkeyPatch
):
    """The address moved to the peer while this node waited: tm takes the proxy's 180 from
    it (its timer becomes the ringing one), and nothing of it is timed or counted."""
    node = Node(ksr, monkeypatch, S.with_values(peers="udp:10.0.1.2:5070"))
    node.pool(A)
    node.route("INVITE")
    node.reply(180, after_ms=5, source=("10.0.1.2", 5070))
    assert not ksr.dropped
    node.reply(180, after_ms=5, source=("10.0.1.2", 5071))  # another port: no peer
    assert ksr.dropped
    node.reply(200, after_ms=5, source=("10.0.1.2", 5070))
    assert node.inflight(A) == 0 and node.totals() == {}
    assert edge_counters(ksr)["foreign_reply"] == 3


def test_callee_503_after_ringing_is_neither_counted_nor_failed_over(node: Node, ksr: FakeKsr):
    node.pool(A, B)
    node.route("INVITE")
    first = node.tried[0]
    node.reply(180, after_ms=5)
    node.reply(503, after_ms=40)
    node.fail(503)
    assert node.tried == [first]
    assert node.inflight(first) == 0
    assert node.totals() == {}


def test_stray_reply_is_dropped_and_counted(node: Node, ksr: FakeKsr):
    ksr.request("INVITE", CALLEE)
    assert node.core_reply() == -1  # t_check_trans: no transaction; the route drops it
    assert ksr.dropped and "X-CP-Load" in ksr.removed_headers
    assert edge_counters(ksr)["stray_reply"] == 1


CALLER_VIA = {
    "transport": "UDP",
    "host": "198.51.100.7",
    "port": "5062",
    "branch": "z9hG4bK-caller-1",
    "received": "",
    "rport": "",
}
"""The caller's Via as the proxy's reply carries it back: sent from where it says."""


def stray_reply(node: Node, ksr: FakeKsr, next_via: dict[str, str], **ids: str) -> None:
    """A pool proxy's reply that matches no transaction, carrying the balancer's Via of the
    INVITE relayed last (its signature) above ``next_via``; ``ids``: ``$ci``/``$cs`` changed."""
    signature = ksr.relays[-1]["via_params"][stray.STRAY_PARAM]
    ksr.pvs |= {"$si": "10.0.0.1", "$sp": 5060, "$rs": 200, **ids}
    top = {"transport": "UDP", "host": "192.0.2.1", f"params.{stray.STRAY_PARAM}": signature}
    ksr.vias = [top, next_via]
    ksr.dropped = False
    # t_check_trans: no transaction; -1 when the native route is to drop it
    assert node.core_reply() == (-1 if ksr.dropped else 1)


def route_invite(node: Node) -> None:
    node.pool(A)
    node.route("INVITE", call_id="call-1@x", source="198.51.100.7", source_port=5062)
    assert len(node.ksr.relays) == 1 and node.ksr.relays[0]["via_params"][stray.STRAY_PARAM]


def test_stray_reply_from_a_pool_proxy_is_forwarded_by_its_via(node: Node, ksr: FakeKsr):
    """A pair's survivor gets the replies to what the dead node relayed: the proxy's."""
    route_invite(node)
    stray_reply(node, ksr, CALLER_VIA)
    assert not ksr.dropped and "X-CP-Load" in ksr.removed_headers
    assert edge_counters(ksr) == {"stray_forwarded": 1}


def test_a_forwarded_stray_reply_is_passed_to_each_peer_and_a_dropped_one_to_none(
    ksr: FakeKsr, monkeypatch: pytest.MonkeyPatch
):
    """The floating address may have moved here while the other node waits on the reply."""
    node = Node(ksr, monkeypatch, S.with_values(peers="udp:10.0.1.2:5060,tcp:[2001:db8::2]:5070"))
    route_invite(node)
    ksr.pvs["$mb"] = "SIP/2.0 200 OK\r\n"
    stray_reply(node, ksr, CALLER_VIA)
    assert ksr.sent_data == [
        ("sip:10.0.1.2:5060", "SIP/2.0 200 OK\r\n"),
        ("sip:[2001:db8::2]:5070;transport=tcp", "SIP/2.0 200 OK\r\n"),
    ]
    ksr.sent_data.clear()
    stray_reply(node, ksr, CALLER_VIA, **{"$ci": "another-call"})  # its signature fails
    assert ksr.dropped and ksr.sent_data == []


def test_without_peers_a_forwarded_stray_reply_goes_by_its_via_alone(node: Node, ksr: FakeKsr):
    route_invite(node)
    ksr.pvs["$mb"] = "SIP/2.0 200 OK\r\n"
    stray_reply(node, ksr, CALLER_VIA)
    assert not ksr.dropped and ksr.sent_data == []


def test_every_branch_of_a_dialog_forming_request_carries_the_signature(node: Node, ksr: FakeKsr):
    """A failover's branch too: the dead node may have relayed either."""
    node.pool(A, B, **{A: 1000.0, B: 0.001})
    node.route("INVITE", call_id="call-1@x", source="198.51.100.7", source_port=5062)
    node.reply(503, after_ms=10)
    node.fail(503)
    first, second = (relay["via_params"].get(stray.STRAY_PARAM) for relay in ksr.relays)
    assert first and second == first  # the same request from the same hop: the same proof
    node.route("MESSAGE")
    assert ksr.relays[-1]["via_params"] == {}  # no dialog: nothing to forward late


def test_stray_reply_goes_by_rport_and_received_as_the_request_came(node: Node, ksr: FakeKsr):
    route_invite(node)
    behind_nat = CALLER_VIA | {"host": "10.9.9.9", "port": "5099"}
    stray_reply(node, ksr, behind_nat | {"received": "198.51.100.7", "rport": "5062"})
    assert not ksr.dropped and edge_counters(ksr) == {"stray_forwarded": 1}


@pytest.mark.parametrize(
    "forged",
    [
        {"received": "203.0.113.66"},
        {"host": "203.0.113.66"},
        {"rport": "5070"},
        {"port": "5070"},
        {"branch": "z9hG4bK-victim"},
        {"transport": "TCP"},
    ],
)
def test_stray_reply_to_another_next_via_than_the_requests_is_dropped(
    node: Node, ksr: FakeKsr, forged: dict[str, str]
):
    """A callee answering late, the proxy bouncing it: a genuine signature over a forged
    next Via sends nothing anywhere."""
    route_invite(node)
    stray_reply(node, ksr, CALLER_VIA | forged)
    assert ksr.dropped and edge_counters(ksr) == {"stray_reply": 1}


@pytest.mark.parametrize("ids", [{"$ci": "call-2@x"}, {"$cs": "2"}])
def test_stray_reply_with_another_calls_signature_is_dropped(
    node: Node, ksr: FakeKsr, ids: dict[str, str]
):
    route_invite(node)
    stray_reply(node, ksr, CALLER_VIA, **ids)
    assert ksr.dropped and edge_counters(ksr) == {"stray_reply": 1}


def test_stray_reply_whose_check_fails_is_dropped(
    node: Node, ksr: FakeKsr, monkeypatch: pytest.MonkeyPatch
):
    """Fail closed: a check that raises is no proof, and the reply goes nowhere."""
    route_invite(node)

    def broken() -> bool:
        raise ValueError("unreadable Via")

    from counterpoise.kamailio import app  # imported with the fake KSR in place

    monkeypatch.setattr(app, "_stray_reply_verifies", broken)
    stray_reply(node, ksr, CALLER_VIA)
    assert ksr.dropped
    assert edge_counters(ksr) == {"stray_reply": 1, "error_stray_reply": 1}


def test_a_reply_reads_its_status_and_source_only_while_a_proxy_may_need_a_sign_of_life(
    node: Node, ksr: FakeKsr
):
    from counterpoise.kamailio import shared
    from counterpoise.kamailio.shared import HEARD_EVERY_MS

    node.pool(A, B)
    node.route("INVITE")  # the worker's table: both proxies
    ksr.returns["tm.t_check_trans"] = 1  # replies of a transaction: no stray's checks
    heard = ksr.htables[htables.HEARD.name]

    def core_reply(source: str) -> list[object]:
        ksr.pvs |= {"$si": source, "$sp": 5060, "$rs": 180}
        ksr.calls.clear()
        assert node.core_reply() == 1
        return [args[0] for args in ksr.called("pv.get")]

    assert "$si" in core_reply("10.0.0.1")
    assert len(heard) == 1
    assert "$si" in core_reply("10.0.0.1")  # B was not heard: any reply may be its
    assert "$si" in core_reply("10.0.0.2")
    assert len(heard) == 2
    node.clock.advance(HEARD_EVERY_MS - 1)
    assert core_reply("10.0.0.2") == []  # both heard within HEARD_EVERY_MS: nothing to read
    shared.bump_version()  # the table published again, same proxies
    node.balancer.refresh()
    assert core_reply("10.0.0.2") == []
    node.clock.advance(1)
    assert "$si" in core_reply("10.0.0.2")  # A's and B's signs of life are due again
    assert [stamp for key, stamp in heard.items() if key.endswith(B)] == [node.clock.monotonic_ms()]


def test_stray_reply_is_dropped_when_the_sign_of_life_fails(
    node: Node, ksr: FakeKsr, monkeypatch: pytest.MonkeyPatch
):
    """Whatever fails before the transaction check, a stray reply is not forwarded."""

    def broken(uri: str, now_ms: int) -> None:
        raise RuntimeError("shared memory full")

    monkeypatch.setattr(node.balancer.view, "note_heard", broken)
    ksr.request("INVITE", CALLEE)
    ksr.pvs |= {"$rs": 200}
    assert node.core_reply() == -1
    assert ksr.dropped and edge_counters(ksr)["stray_reply"] == 1


def test_unsigned_stray_reply_from_a_pool_proxy_is_dropped(node: Node, ksr: FakeKsr):
    node.pool(A)
    ksr.request("INVITE", CALLEE, source="10.0.0.1", source_port=5060)
    assert node.core_reply() == -1  # t_check_trans: no transaction
    assert ksr.dropped and edge_counters(ksr) == {"stray_reply": 1}


# --- hostile bytes and guarded hooks ------------------------------------------------------------


def test_non_utf8_load_header_is_rejected_and_the_attempt_ends(node: Node, ksr: FakeKsr):
    node.pool(A)
    node.route("INVITE")
    node.reply(200, after_ms=5, headers={"X-CP-Load": b"active=\xff;workers=2"})
    assert node.inflight(A) == 0
    assert node.totals() == {A: Tally(requests_ok=1, first_reply_ms_sum=5, final_reply_ms_sum=5,
                                      load_headers_rejected=1)}  # fmt: skip
    assert edge_counters(ksr)["not_utf8"] == 1


def test_a_hook_that_raises_is_counted_logged_once_and_returns_1(node: Node, ksr: FakeKsr):
    node.pool(A)
    ksr.returns["hdr.append"] = lambda header: 1 / 0
    for _ in range(3):
        node.route("INVITE")
        assert ksr.sl_replies == [(503, "No Proxy Available")]  # -1: the route answers
    assert edge_counters(ksr)["error_select"] == 3
    assert len([text for text in ksr.logged("err") if "select failed, carrying on" in text]) == 1


def test_in_flight_comes_down_even_when_the_reply_route_fails(node: Node, ksr: FakeKsr):
    node.pool(A)
    node.route("INVITE")

    def load_header_read_fails(spec: str) -> object:
        if spec == "$hdr(X-CP-Load)":
            raise RuntimeError("the load header's read failed")
        return ksr.module.pv._get(spec)

    ksr.returns["pv.get"] = load_header_read_fails
    node.reply(200, after_ms=5, headers={"X-CP-Load": b"\xff"})
    assert node.inflight(A) == 0
    assert edge_counters(ksr)["error_reply"] == 1


# --- in-flight drift ------------------------------------------------------------------------------


def test_counts_of_an_epoch_no_attempt_can_still_be_in_are_dropped(node: Node, ksr: FakeKsr):
    from counterpoise.core import attempts

    node.pool(A)
    node.route("INVITE")  # in flight now, and stays so: its outcome is never counted
    assert node.inflight(A) == 1
    node.tick(attempts.INFLIGHT_EPOCH_MS)
    assert node.inflight(A) == 1  # the previous epoch is still live
    node.tick(attempts.INFLIGHT_EPOCH_MS)
    assert node.inflight(A) == 0
    assert edge_counters(ksr)["inflight_corrected"] == 1
    assert any("counted in flight for over 200 s" in line for line in node.logs)
