"""The routing module's decisions (``kamailio/app.py``), run through the fake ``KSR``.

The edge runs as in Kamailio but for the SIP stack: a real ``Embedded`` called as
``kamailio.cfg``'s request route calls it, with the real core, the real shared-memory glue
(``kamailio.shared``) on the fake's hash tables, and the real sync loop (on an in-memory
store, ticked through ``cp_sync_tick``) publishing the table the routes pick from and
summing what they counted. The test plays Kamailio: a request arrives
(``ksr.request``), a route runs, replies and failures arrive on the transaction.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Callable

import pytest

from counterpoise.core import location
from counterpoise.core.pool import Admin
from counterpoise.core.routing_table import RoutingEntry
from counterpoise.core.settings import Fallback, Settings, runtime_values
from counterpoise.core.tally import Tally
from counterpoise.kamailio import htables

from ..fakes.edge import CALLEE, Node, edge_counters
from ..fakes.ksr import MYSELF, FakeKsr

A, B, C, D = (f"sip:10.0.0.{i}:5060" for i in (1, 2, 3, 4))
S = Settings.of(location_server=False)


class FakeLocation:
    """``kamailio.location.LocationRouting`` as the ``Balancer`` sees it, without Redis: every
    initial request's AOR is held by ``holder``; in-dialog requests without a route set have
    a dialog record naming ``dialog_proxy``."""

    def __init__(
        self,
        holder: str | None = None,
        fallback: Fallback = Fallback.WEIGHT,
        dialog_proxy: str | None = None,
    ) -> None:
        self.holder = holder
        self.fallback = fallback
        self.dialog_proxy = dialog_proxy
        self.decisions: list[location.Decision] = []
        self.answered: list[str] = []
        self.dialogs_ended = 0

    def route_initial(
        self, usable: Callable[[str], bool], set_aside: Callable[[str], bool]
    ) -> location.Decision:
        found = location.Holder(self.holder, location.PIN) if self.holder else None
        held_usable = found is not None and usable(found.proxy)
        held_aside = found is not None and set_aside(found.proxy)
        decision = location.decide(found, held_usable, False, self.fallback, held_aside)
        self.decisions.append(decision)
        return decision

    def keeps_to_holder(self) -> bool:
        return self.fallback == Fallback.REJECT and self.decisions[-1].proxy is not None

    def on_2xx(self, proxy: str) -> None:
        self.answered.append(proxy)

    def route_dialog(self) -> str | None:
        return self.dialog_proxy

    def dialog_ended(self, ids: object) -> None:
        self.dialogs_ended += 1


@pytest.fixture
def node(ksr: FakeKsr, monkeypatch: pytest.MonkeyPatch) -> Node:
    return Node(ksr, monkeypatch, S)


def failed_once(requests_ok: int = 0) -> Tally:
    return Tally(requests_failed=1, requests_ok=requests_ok)


# --- requests the balancer does not choose a proxy for ---------------------------------------


def test_cancel_follows_its_transaction(node: Node, ksr: FakeKsr):
    node.pool(A)
    ksr.returns["tm.t_check_trans"] = 1  # the INVITE's transaction is known
    node.route("CANCEL")
    assert (
        len(ksr.relays) == 1 and ksr.relays[0]["duri"] is None
    )  # tm sends it where the INVITE went
    assert ksr.sl_replies == []
    ksr.returns["tm.t_check_trans"] = -1
    node.route("CANCEL")
    assert ksr.relays == [] and ksr.forwards == [A]  # no transaction: an orphan
    assert ksr.sl_replies == [(200, "OK")]


def test_an_orphan_goes_statelessly_to_every_proxy_and_only_from_outside_the_pool(
    node: Node, ksr: FakeKsr
):
    """A CANCEL or an error reply's ACK matching no transaction here (a pair's dead node
    relayed the INVITE): every proxy gets it once, the holder matches it by its branch."""
    node.pool(A, B)
    ksr.returns["tm.t_check_trans"] = -1
    node.route("ACK", to_tag="callee-tag")  # no Route, no dialog record
    assert sorted(ksr.forwards) == sorted([A, B]) and ksr.sl_replies == []
    assert ksr.relays == []
    node.route("CANCEL", source="10.0.0.1", source_port=5060)  # from proxy A's address
    assert ksr.forwards == [] and ksr.sl_replies == []
    counts = edge_counters(ksr)
    assert counts["orphan_forwarded"] == 1 and counts["relay_denied"] == 1


def test_in_dialog_request_with_a_route_set_is_relayed(node: Node, ksr: FakeKsr):
    node.pool(A)
    node.balancer.location = FakeLocation(dialog_proxy=B)
    route = node.sealed_route(A, host="lb.example")
    node.route("BYE", to_tag="callee-tag", headers={"Route": f"{route}, <{A};lr>"})
    assert len(ksr.relays) == 1
    assert ksr.relays[0]["fr_timers"] == (0, S.failover.in_dialog_fr_timer_ms)
    assert ksr.relays[0]["duri"] == f"{A};transport=udp"  # the sealed proxy, not the balancer
    assert node.balancer.location.dialogs_ended == 1
    assert ksr.avps == {}  # not an attempt: nothing counted, no failover
    assert ksr.sl_replies == []


def test_in_dialog_request_without_a_route_set_follows_its_dialog_record(node: Node, ksr: FakeKsr):
    node.pool(A, B)
    node.balancer.location = FakeLocation(dialog_proxy=B)
    node.route("INFO", to_tag="callee-tag")
    assert [relay["duri"] for relay in ksr.relays] == [B]
    assert ksr.relays[0]["routes"] == [f"Route: <{B};lr>\r\n"]
    assert ksr.relays[0]["fr_timers"] == (0, S.failover.in_dialog_fr_timer_ms)


def test_in_dialog_request_without_a_route_set_or_record_gets_404(node: Node, ksr: FakeKsr):
    node.pool(A)
    node.route("INFO", to_tag="callee-tag")
    assert ksr.sl_replies == [(404, "Not here")] and ksr.relays == []
    node.balancer.location = FakeLocation(dialog_proxy=None)
    node.route("INFO", to_tag="callee-tag")
    assert ksr.sl_replies == [(404, "Not here")] and ksr.relays == []
    # An ACK is never answered: without a transaction or a record it is dropped.
    node.route("ACK", to_tag="callee-tag")
    assert ksr.sl_replies == [] and ksr.relays == []


def test_local_options_is_answered_200(node: Node, ksr: FakeKsr):
    node.pool(A)
    node.route("OPTIONS", f"sip:{MYSELF}")
    assert ksr.sl_replies == [(200, "OK")] and ksr.relays == []
    # With a user, or to another host, it is a request like any other.
    for ruri in (f"sip:alice@{MYSELF}", "sip:elsewhere.example"):
        node.route("OPTIONS", ruri)
        assert ksr.sl_replies == [] and node.tried == [A]


# --- initial requests ------------------------------------------------------------------------


def test_initial_request_is_relayed_as_an_attempt(node: Node, ksr: FakeKsr):
    node.pool(A)
    node.route("INVITE")
    assert ksr.record_routed
    (relay,) = ksr.relays
    assert relay["duri"] == A and relay["ruri"] == CALLEE
    assert relay["fr_timers"] == (S.failover.fr_inv_timer_ms, S.failover.fr_timer_ms)
    assert (relay["on_reply"], relay["on_failure"]) == ("cp_on_reply", "cp_failure")
    from counterpoise.kamailio import avps

    assert avps.tried() == [A]
    assert node.inflight(A) == 1
    node.route("MESSAGE")
    assert not ksr.record_routed  # only dialog-forming requests stay on the path


def test_an_invite_hears_its_100_once_relayed_and_a_failover_sends_none(node: Node, ksr: FakeKsr):
    node.pool(A, B)
    node.route("INVITE")
    (relay,) = ksr.relays
    assert not relay["auto_inv_100"] and relay["replies_before"] == []
    assert ksr.sl_replies == [(100, "Trying")]
    node.reply(503, after_ms=20)
    node.fail(503)
    assert len(ksr.relays) == 2 and ksr.sl_replies == [(100, "Trying")]
    node.route("MESSAGE")
    assert ksr.relays[0]["auto_inv_100"] and ksr.sl_replies == []


def test_a_request_reads_the_routing_table_version_once_and_a_reply_not_at_all(
    node: Node, ksr: FakeKsr
):
    node.pool(A)
    node.route("INVITE")  # the worker's first request: the table is read and parsed
    versions = [(htables.ROUTING.name, htables.ROUTING_VERSION)]
    ksr.calls.clear()
    node.route("MESSAGE")
    assert ksr.called("htable.sht_get").count(versions[0]) == 1
    ksr.calls.clear()
    node.route("INVITE")  # once per Python entry: cp_seal_select
    assert ksr.called("htable.sht_get").count(versions[0]) == 1
    ksr.calls.clear()
    node.reply(200)
    assert ksr.called("htable.sht_get").count(versions[0]) == 0


def test_a_reply_reads_each_state_of_its_attempt_once(node: Node, ksr: FakeKsr):
    node.pool(A)
    node.route("INVITE")
    node.reply(180, after_ms=5)
    ksr.calls.clear()
    node.reply(200, after_ms=10)
    reads = [args[0] for args in ksr.called("pv.get") + ksr.called("pv.is_null")]
    attempt_reads = [spec for spec in reads if spec.startswith("$avp(cp") and spec[-2] == "0"]
    assert sorted(attempt_reads) == sorted(set(attempt_reads))
    assert {"$avp(cpf0)", "$avp(cpt0)", "$avp(cpd0)"} <= set(attempt_reads)


def test_dispatch_follows_the_weights(node: Node, ksr: FakeKsr):
    node.pool(A, B, C, **{B: 3.0})
    node.store.set_admin(C, Admin.DRAINED)
    node.tick(100)
    picked = collections.Counter()
    for _ in range(1000):
        node.route("INVITE")
        picked[node.tried[0]] += 1
        node.reply(200, after_ms=1)
    assert set(picked) == {A, B}  # never the drained proxy
    assert picked[B] / 1000 == pytest.approx(0.75, abs=0.04)  # 3 sigma: 0.041
    assert node.inflight(A) == node.inflight(B) == 0


def test_dispatch_to_the_location_holder(node: Node, ksr: FakeKsr):
    node.pool(A, B, C)
    node.balancer.location = FakeLocation(holder=B)
    for _ in range(20):
        node.route("INVITE")
        assert node.tried == [B]
    node.reply(200)
    assert node.balancer.location.answered == [B]


def test_unusable_holder_falls_back_to_weight_or_is_rejected(node: Node, ksr: FakeKsr):
    node.pool(A, B)
    node.store.set_admin(B, Admin.DRAINED)
    node.tick(100)
    node.balancer.location = FakeLocation(holder=B, fallback=Fallback.WEIGHT)
    node.route("INVITE")
    assert node.tried == [A]
    node.balancer.location = FakeLocation(holder=B, fallback=Fallback.REJECT)
    node.route("INVITE")
    assert ksr.relays == []
    assert ksr.sl_replies == [(location.REJECT_CODE, location.REJECT_REASON)]


def test_a_holder_set_aside_for_its_silence_keeps_its_users_where_none_else_can_serve_them(
    node: Node, ksr: FakeKsr
):
    node.pool(A, B)  # the node's first tick: its dialog key, then the table below
    aside = RoutingEntry(B, 0.0, queueing=False, inflight_limit=0, long_wait=False, set_aside=True)
    node.publish(RoutingEntry(A, 1.0, False, 0, False), aside)
    node.balancer.location = FakeLocation(holder=B, fallback=Fallback.REJECT)
    node.route("INVITE")
    # Relayed to its stalled holder to wait there: its 100, no 480.
    assert node.tried == [B] and ksr.sl_replies == [(100, "Trying")]
    node.balancer.location = FakeLocation(holder=B, fallback=Fallback.WEIGHT)
    node.route("INVITE")
    assert node.tried == [A]  # another proxy may serve the user: by weight, away from the stall
    # Down (or drained): weight 0 and not set aside; the fallback applies.
    node.publish(RoutingEntry(A, 1.0, False, 0, False), RoutingEntry(B, 0.0, False, 0, False))
    node.balancer.location = FakeLocation(holder=B, fallback=Fallback.REJECT)
    node.route("INVITE")
    assert ksr.relays == [] and ksr.sl_replies == [(location.REJECT_CODE, location.REJECT_REASON)]


def test_no_proxy_gets_503(node: Node, ksr: FakeKsr):
    node.tick()
    node.route("INVITE")
    assert ksr.sl_replies == [(503, "No Proxy Available")] and ksr.relays == []
    node.pool(A)
    node.store.set_admin(A, Admin.DRAINED)
    node.tick(100)
    node.route("INVITE")
    assert ksr.sl_replies == [(503, "No Proxy Available")]


def test_relay_that_fails_locally_is_counted_and_answered(node: Node, ksr: FakeKsr):
    node.pool(A)
    ksr.returns["tm.t_relay"] = -1
    node.route("INVITE")
    assert ksr.sl_replies == [(500, "error")]
    assert node.inflight(A) == 0
    assert node.totals() == {A: failed_once()}


# --- failover --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 500, 503, 504, 599])
def test_failover_on_408_and_5xx(node: Node, ksr: FakeKsr, status: int):
    node.pool(A, B)
    node.route("INVITE")
    first = node.tried[0]
    node.reply(status, after_ms=20)
    node.fail(status)
    second = next(uri for uri in (A, B) if uri != first)
    assert node.tried == [first, second]
    assert ksr.relays[1]["ruri"] == CALLEE  # $ru set again: a new branch
    from counterpoise.kamailio import avps

    assert avps.tried() == [first, second]
    assert any(f"{first} failed ({status}), retrying on {second}" in t for t in ksr.logged("info"))
    node.reply(200, after_ms=30)
    assert node.inflight(A) == node.inflight(B) == 0
    assert node.totals() == {
        first: failed_once(),
        second: Tally(requests_ok=1, first_reply_ms_sum=30, final_reply_ms_sum=30),
    }


def test_failover_on_a_silent_timeout(node: Node, ksr: FakeKsr):
    node.pool(A, B)
    node.route("INVITE")
    first = node.tried[0]
    node.fail(408, after_ms=S.failover.fr_timer_ms, timeout=True, replied=False)
    assert len(node.tried) == 2 and node.tried[1] != first
    assert node.inflight(first) == 0
    # A timeout is charged what it waited beyond the failure penalty (issue 14).
    waited = int(S.failover.fr_timer_ms - S.latency.failure_penalty_ms)
    assert node.totals() == {first: Tally(requests_failed=1, timeout_excess_ms_sum=waited)}


@pytest.mark.parametrize("status", [180, 183])
def test_no_failover_after_a_provisional_reply(node: Node, ksr: FakeKsr, status: int):
    node.pool(A, B)
    node.route("INVITE")
    first = node.tried[0]
    node.reply(100, after_ms=5)
    node.reply(status, after_ms=40)
    node.fail(408, after_ms=S.failover.fr_inv_timer_ms, timeout=True, replied=True)
    assert node.tried == [first]
    # The callee did not answer: nothing is counted for or against the proxy (issue 10).
    assert node.inflight(first) == 0
    assert node.totals() == {}


def test_failover_on_a_timeout_after_only_100_trying(node: Node, ksr: FakeKsr):
    """100 Trying is the proxy's own hop-by-hop reply: it says nothing of the callee, and
    the timeout (tm's 408) fails over as a 408 does. It is not counted as a proxy failure."""
    node.pool(A, B)
    node.route("INVITE")
    first = node.tried[0]
    node.reply(100, after_ms=5)
    node.fail(408, after_ms=S.failover.fr_inv_timer_ms, timeout=True, replied=True)
    assert len(node.tried) == 2
    assert node.totals()[first].requests_failed == 0


def test_progress_timeout_shortens_the_wait_after_100_until_the_callee_rings(
    ksr: FakeKsr, monkeypatch: pytest.MonkeyPatch
):
    """A proxy that took a call (100 Trying) and then died would hold it for fr_inv_timer_ms:
    with progress_timeout_ms tm gives up on it sooner and the call fails over."""
    settings = S.with_values(progress_timeout_ms=5000)
    node = Node(ksr, monkeypatch, settings)
    node.pool(A, B)
    node.route("INVITE")
    node.reply(100, after_ms=5)
    assert ksr.fr_timers == (5000, 0)  # the branch now waits 5 s for a ringing reply
    node.fail(408, after_ms=5000, timeout=True, replied=True)
    assert len(node.tried) == 2
    node.reply(100, after_ms=5)
    node.reply(180, after_ms=40)
    assert ksr.fr_timers == (S.failover.fr_inv_timer_ms, 0)  # ringing: the full time again


def test_without_progress_timeout_100_leaves_the_timers_alone(node: Node, ksr: FakeKsr):
    node.pool(A)
    node.route("INVITE")
    relayed = ksr.fr_timers
    node.reply(100, after_ms=5)
    node.reply(180, after_ms=40)
    assert ksr.fr_timers == relayed == (S.failover.fr_inv_timer_ms, S.failover.fr_timer_ms)


def test_no_failover_on_a_callee_reply(node: Node, ksr: FakeKsr):
    node.pool(A, B)
    node.route("INVITE")
    node.reply(486, after_ms=10)
    node.fail(486)
    assert len(node.tried) == 1
    assert node.totals()[node.tried[0]] == Tally(
        requests_ok=1, first_reply_ms_sum=10, final_reply_ms_sum=10
    )


def test_no_failover_beyond_max_attempts(node: Node, ksr: FakeKsr):
    node.pool(A, B, C, D)
    node.route("INVITE")
    for _ in range(S.failover.max_attempts):
        node.reply(503, after_ms=10)
        node.fail(503)
    assert len(node.tried) == S.failover.max_attempts == len(set(node.tried))
    totals = node.totals()
    assert set(totals) == set(node.tried)
    assert all(tally == failed_once() for tally in totals.values())


def test_no_failover_when_every_proxy_was_tried(node: Node, ksr: FakeKsr):
    node.pool(A, B)
    node.route("INVITE")
    for _ in range(2):
        node.fail(408, after_ms=S.failover.fr_timer_ms, timeout=True, replied=False)
    assert sorted(node.tried) == [A, B]
    assert node.inflight(A) == node.inflight(B) == 0


def test_no_failover_when_the_caller_cancelled(node: Node, ksr: FakeKsr):
    node.pool(A, B)
    node.route("INVITE")
    node.reply(503, after_ms=10)
    node.fail(503, canceled=True)
    assert len(node.tried) == 1


def test_no_failover_from_a_holder_bound_request(node: Node, ksr: FakeKsr):
    node.pool(A, B)
    node.balancer.location = FakeLocation(holder=B, fallback=Fallback.REJECT)
    node.route("INVITE")
    node.fail(408, after_ms=S.failover.fr_timer_ms, timeout=True, replied=False)
    assert node.tried == [B]


# --- counting each attempt's outcome once ----------------------------------------------------


def test_each_attempt_is_counted_once(node: Node, ksr: FakeKsr):
    node.pool(A)
    node.route("INVITE")
    node.reply(503, after_ms=10)
    node.reply(503, after_ms=10)  # a retransmission reaching the reply route again
    node.fail(503)  # nowhere to fail over to; the failure route must not count it again
    assert node.inflight(A) == 0
    assert node.totals() == {A: failed_once()}


def test_latency_is_timed_to_the_first_reply_other_than_100(node: Node, ksr: FakeKsr):
    node.pool(A)
    node.route("INVITE")
    node.reply(100, after_ms=2)
    node.reply(180, after_ms=28)
    node.reply(183, after_ms=100)
    node.reply(200, after_ms=300)
    assert node.totals() == {
        A: Tally(requests_ok=1, first_reply_ms_sum=30, final_reply_ms_sum=430, trying_ms_sum=2)
    }


def test_latency_sample_is_capped_at_the_failure_penalty(node: Node, ksr: FakeKsr):
    node.pool(A)
    node.route("INVITE")
    node.reply(200, after_ms=30_000)
    tally = node.totals()[A]
    assert tally.first_reply_ms_sum == S.latency.failure_penalty_ms
    assert tally.final_reply_ms_sum == 30_000


def test_a_relayed_request_asks_its_proxy_for_its_load(node: Node, ksr: FakeKsr):
    node.pool(A)
    node.route("INVITE")
    assert ksr.relays and ksr.appended_headers == ["X-CP-Load-Request: 1\r\n"]


def test_load_header_of_a_reply_is_counted(node: Node, ksr: FakeKsr):
    node.pool(A)
    node.route("INVITE")
    node.reply(200, after_ms=5, headers={"X-CP-Load": "tx=3;workers=4;active=2"})
    node.route("INVITE")
    node.reply(200, after_ms=5, headers={"X-CP-Load": "junk"})
    tally = node.totals()[A]
    assert (tally.load_samples, tally.load_milli_sum, tally.load_headers_rejected) == (1, 500, 1)


def test_reply_without_the_proxy_avp_is_ignored(node: Node, ksr: FakeKsr):
    node.pool(A)
    ksr.request("INVITE", CALLEE)  # nothing relayed: no attempt AVPs
    node.reply(200, branch=0)
    node.reply(503, branch=3)
    ksr.pvs.pop("$T_branch_idx")
    assert node.app.cp_on_reply(None) == 1
    assert node.totals() == {}
    assert node.inflight(A) == 0


# --- in-dialog ACK ---------------------------------------------------------------------------


def test_in_dialog_ack_matching_a_transaction_is_relayed_or_absorbed(node: Node, ksr: FakeKsr):
    node.pool(A)
    ksr.returns["tm.t_check_trans"] = 1  # the ACK of a 2xx tm still holds: by its seal
    node.route("ACK", to_tag="callee-tag", headers={"Route": node.sealed_route(A)})
    assert len(ksr.relays) == 1 and ksr.sl_replies == []
    node.route("ACK", to_tag="callee-tag")  # no route set: it could go anywhere, it goes nowhere
    assert ksr.relays == [] and ksr.sl_replies == []
    ksr.returns["tm.t_check_trans"] = 0  # the ACK of a negative reply: tm absorbed it
    node.route("ACK", to_tag="callee-tag")
    assert ksr.relays == [] and ksr.sl_replies == []


# --- probes ----------------------------------------------------------------------------------


def probe_outcome(node: Node, ksr: FakeKsr, sent_ms: int, **event: object) -> None:
    """The uac module reports a probe's outcome: ``$uac_req(...)`` of the event, then
    ``cp_uac_reply`` in some SIP worker."""
    ksr.uac_req = {"evparam": f"{sent_ms} {A}", **event}
    ksr.pvs |= {"$si": "10.0.0.1", "$sp": 5060}  # the reply comes from the probed proxy
    assert node.app.cp_uac_reply(None, "uac:reply") == 1


def test_probe_is_sent_with_the_uac_module(node: Node, ksr: FakeKsr):
    from counterpoise.kamailio.probes import UacProbeSender

    UacProbeSender("sip:cp@lb", "", "OPTIONS", "probe").send(A, 1234)
    UacProbeSender("sip:cp@lb", "sip:cp@192.0.2.1:5060", "INVITE", "probe").send(B, 1250)
    options, invite = ksr.uac_sent
    assert (options["method"], options["ruri"], options["evparam"]) == ("OPTIONS", A, f"1234 {A}")
    assert options["evroute"] == 1 and "Max-Forwards: 1" in options["hdrs"]
    assert "X-CP-Load-Request: 1\r\n" in options["hdrs"]  # a probe asks for the load
    assert invite["ruri"] == B.replace("sip:", "sip:probe@")
    assert "Contact: <sip:cp@192.0.2.1:5060>" in invite["hdrs"]


def test_probe_outcomes_are_counted(node: Node, ksr: FakeKsr):
    node.pool(A)
    sent = node.clock.now
    node.clock.advance(7)
    probe_outcome(node, ksr, sent, evtype=1, evcode=200)
    probe_outcome(node, ksr, sent, evtype=1, evcode=503)
    probe_outcome(node, ksr, sent, evtype=2, evcode=408)  # no reply: a local timeout
    probe_outcome(node, ksr, sent, evtype=1, evcode=404)  # answered: the proxy is alive
    assert node.totals() == {A: Tally(probes_ok=2, probes_failed=2, probe_ms_sum=14)}


def test_a_probe_timing_out_after_a_later_one_was_answered_is_not_a_failure(
    node: Node, ksr: FakeKsr
):
    """A restarted proxy answers its new probes while those sent before the restart time out:
    they must not end the run of answers that brings it back."""
    node.pool(A)
    lost = node.clock.now
    node.clock.advance(200)
    answered = node.clock.now
    node.clock.advance(5)
    probe_outcome(node, ksr, answered, evtype=1, evcode=200)
    node.clock.advance(1300)
    probe_outcome(node, ksr, lost, evtype=2, evcode=408)
    assert node.totals() == {A: Tally(probes_ok=1, probe_ms_sum=5)}
    node.clock.advance(200)
    probe_outcome(node, ksr, node.clock.now - 1500, evtype=2, evcode=408)  # sent after: counts
    assert node.totals()[A].probes_failed == 1


def test_answered_invite_probe_is_hung_up_through_the_proxy(node: Node, ksr: FakeKsr):
    node.pool(A)
    ksr.request("INVITE", A.replace("sip:", "sip:probe@"))
    ksr.pvs |= {"$(ct{tobody.uri})": "sip:uas@10.0.0.9:5070", "$cs": "1"}
    ksr.headers = {"From": "<sip:cp@lb>;tag=f1", "To": f"<{A}>;tag=t1"}
    probe_outcome(node, ksr, node.clock.now, evtype=1, evcode=200)
    assert ksr.uac_sent == [{"method": "BYE", "ruri": "sip:uas@10.0.0.9:5070", "nexthop": A}]
    assert ksr.called("tm.t_uac_send")[0][4].startswith("From: <sip:cp@lb>;tag=f1\r\n")
    assert "CSeq: 2 BYE" in ksr.called("tm.t_uac_send")[0][4]


def test_probe_event_without_a_proxy_is_ignored(node: Node, ksr: FakeKsr):
    node.pool(A)
    ksr.uac_req = {"evparam": "garbage", "evtype": 1, "evcode": 200}
    assert node.app.cp_uac_reply(None, "uac:reply") == 1
    assert node.totals() == {}


# --- settings pushed at runtime (counterpoise up on SIGHUP) ------------------------------------


def push_settings(node: Node, version: int, values: dict[str, str]) -> None:
    """What ``up`` writes over JSON-RPC: the runtime settings as text, then a new version."""
    table = node.ksr.htables[htables.ROUTING.name]
    table[htables.RUNTIME_SETTINGS] = json.dumps(values)
    table[htables.RUNTIME_SETTINGS_VERSION] = version


def runtime(**values: object) -> dict[str, str]:
    return runtime_values(S.with_values(**values))


def test_runtime_settings_reach_the_workers_and_the_timer(node: Node, ksr: FakeKsr):
    node.pool(A)
    node.route("INVITE")
    assert ksr.fr_timers == (S.failover.fr_inv_timer_ms, S.failover.fr_timer_ms)

    push_settings(node, 1, runtime(fr_timer_ms=800, latency_offset_ms=50.0))
    node.tick()  # the timer with its next tick, and the sync loop's policy with it
    assert node.balancer.sync.settings.latency.latency_offset_ms == 50.0
    assert any("settings changed at runtime" in text for text in ksr.logged("notice"))
    node.route("INVITE")  # the worker takes them with its next request after that tick
    assert ksr.fr_timers == (S.failover.fr_inv_timer_ms, 800)

    push_settings(node, 2, runtime())  # back to the start-up values
    node.tick()
    node.route("INVITE")
    assert ksr.fr_timers == (S.failover.fr_inv_timer_ms, S.failover.fr_timer_ms)


def test_a_bad_pushed_setting_is_refused_and_the_old_ones_kept(node: Node, ksr: FakeKsr):
    node.pool(A)
    push_settings(node, 1, {"fr_timer_ms": "-1"})
    node.tick()
    node.route("INVITE")
    assert ksr.fr_timers == (S.failover.fr_inv_timer_ms, S.failover.fr_timer_ms)
    assert any("runtime settings refused" in text for text in ksr.logged("err"))


def test_python_is_not_entered_for_every_sent_message():
    """Issue 15: the onsend route has nothing to do here, and each Python entry costs CPU per
    message; the native configs have none."""
    from counterpoise import processes

    for cfg in (processes.KAMAILIO_CFG, processes.EMBED_CFG):
        assert "onsend_route" not in cfg.read_text()
