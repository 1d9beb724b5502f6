"""The embedding API (``kamailio/embed.py``) through the fake ``KSR``: what a native config's
``python_exec`` and a KEMI Python config's class get, and that the routes it arms are the
include's blocks or the class's own methods.

A ``Node`` publishes the pool into the fake's shared memory (its sync loop); an ``Embedded``
of the same settings routes from it, as another config's Python would in the same Kamailio.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from counterpoise.core.settings import Settings
from counterpoise.core.tally import Tally

from ..fakes.edge import CALLEE, Node
from ..fakes.ksr import FakeKsr

A, B = "sip:10.0.0.1:5060", "sip:10.0.0.2:5060"
S = Settings.of(location_server=False, hold_queue_ms=0)
INCLUDE = Path(__file__).resolve().parents[2] / "embed" / "counterpoise.cfg"
DIALOG_ROUTES = INCLUDE.with_name("counterpoise-dialog.cfg")


@pytest.fixture
def node(ksr: FakeKsr, monkeypatch: pytest.MonkeyPatch) -> Node:
    return Node(ksr, monkeypatch, S)


def embedded(native: bool):
    from counterpoise.kamailio.embed import Embedded

    routes = Embedded(S, native=native)
    routes.counterpoise.rng.seed(2)
    return routes


def test_select_sets_du_and_arms_the_include_routes_without_relaying(node: Node, ksr: FakeKsr):
    node.pool(A)
    cp = embedded(native=True)
    ksr.request("INVITE", CALLEE)
    assert cp.cp_select(None) == 1
    assert ksr.pvs["$du"] == A and ksr.relays == [] and ksr.sl_replies == []
    assert (ksr.on_reply, ksr.on_failure) == ("CP_REPLY", "CP_FAILURE")
    assert node.inflight(A) == 1


def test_select_without_a_proxy_is_false_and_answers_nothing(node: Node, ksr: FakeKsr):
    node.tick()
    cp = embedded(native=True)
    ksr.request("INVITE", CALLEE)
    assert cp.cp_select(None) == -1
    assert ksr.sl_replies == [] and ksr.relays == [] and "$du" not in ksr.pvs


def test_a_failed_relay_is_the_proxy_failure(node: Node, ksr: FakeKsr):
    node.pool(A)
    cp = embedded(native=True)
    ksr.request("INVITE", CALLEE)
    assert cp.cp_select(None) == 1
    assert cp.cp_relay_failed(None) == 1
    assert node.inflight(A) == 0
    assert node.totals() == {A: Tally(requests_failed=1)}


def test_the_failure_route_relays_to_the_next_proxy_with_the_routes_armed(node: Node, ksr: FakeKsr):
    node.pool(A, B)
    cp = embedded(native=False)
    ksr.request("INVITE", CALLEE)
    assert cp.cp_select(None) == 1
    first = ksr.pvs["$du"]
    assert ksr.called("tm.t_relay") == [] and config_relays() == 1
    ksr.failure(503)
    assert cp.cp_failure(None) == 1
    second = ksr.relays[-1]["duri"]
    assert {first, second} == {A, B}
    assert (ksr.relays[-1]["on_reply"], ksr.relays[-1]["on_failure"]) == (
        "cp_on_reply",
        "cp_failure",
    )


def config_relays() -> int:
    """The config's own ``t_relay`` after a true ``cp_select``."""
    import KSR

    return KSR.tm.t_relay()


def test_a_failure_of_a_request_it_did_not_route_is_left_to_tm(node: Node, ksr: FakeKsr):
    node.pool(A)
    cp = embedded(native=True)
    ksr.request("INVITE", CALLEE)
    ksr.failure(503)
    assert cp.counterpoise.failover() == -1 and ksr.relays == []


def test_a_native_release_tick_hands_each_held_request_to_the_config(node: Node, ksr: FakeKsr):
    """tmx's KEMI ``t_continue`` runs KEMI functions only: the include's release tick resumes
    each request with the cfg ``t_continue``, from the variables ``cp_release_next`` sets."""
    from counterpoise.kamailio import holding

    node.pool(A)
    cp = embedded(native=True)
    ksr.request("INVITE", CALLEE)
    assert holding.hold(4000)
    suspended = (ksr.pvs["$T(id_index)"], ksr.pvs["$T(id_label)"])
    assert cp.cp_release_next(None) == 1
    assert (ksr.pvs["$var(cp_index)"], ksr.pvs["$var(cp_label)"]) == suspended
    assert holding.count() == 0 and ksr.called("tmx.t_continue") == []
    assert cp.cp_release_next(None) == -1


def test_a_failing_release_step_ends_the_native_tick(
    node: Node, ksr: FakeKsr, monkeypatch: pytest.MonkeyPatch
):
    """The include loops while ``cp_release_next`` is true: an error must read as false."""
    cp = embedded(native=True)
    monkeypatch.setattr(cp.counterpoise, "next_release", lambda: 1 / 0)
    assert cp.cp_release_next(None) == -1


def test_seal_arms_the_branch_route_that_seals_each_branch(node: Node, ksr: FakeKsr):
    node.pool(A, B)
    cp = embedded(native=False)
    ksr.routes["cp_on_branch"] = cp.cp_on_branch
    ksr.request("INVITE", CALLEE)
    assert cp.cp_seal(None) == 1 and cp.cp_select(None) == 1
    assert ksr.on_branch == "cp_on_branch"
    assert config_relays() == 1 and ksr.relays[-1]["record_route_params"]
    ksr.failure(503)
    assert cp.cp_failure(None) == 1
    assert ksr.relays[-1]["record_route_params"]  # the failover's branch sealed too


def test_without_seal_the_config_keeps_its_branch_route(node: Node, ksr: FakeKsr):
    node.pool(A)
    cp = embedded(native=True)
    ksr.request("INVITE", CALLEE)
    assert cp.cp_select(None) == 1
    assert ksr.called("tm.t_on_branch") == []


def test_kemi_routes_are_methods_of_the_class_an_operator_inherits():
    from counterpoise.kamailio.embed import KEMI_ROUTES, Embedded

    for name in (KEMI_ROUTES.reply, KEMI_ROUTES.failure, KEMI_ROUTES.release):
        assert callable(getattr(Embedded, name)), name


def test_the_include_calls_and_names_only_what_exists():
    """Every ``python_exec`` and KEMI callback of the include (and of the dialog routes it
    includes) is a method of ``Embedded``; every native route ``Embedded`` arms or the
    ``Balancer`` calls is a block of the include."""
    from counterpoise.kamailio.app import IN_DIALOG_ROUTE, SEAL_ROUTE
    from counterpoise.kamailio.embed import NATIVE_ROUTES, Embedded

    assert f'include_file "{DIALOG_ROUTES.name}"' in INCLUDE.read_text()
    text = INCLUDE.read_text() + DIALOG_ROUTES.read_text()
    called = set(re.findall(r'python_exec\("(\w+)"\)', text))
    called |= set(re.findall(r"route=(cp_\w+)", text))
    called |= set(re.findall(r'"event_callback", "(\w+)"', text))
    assert called and all(callable(getattr(Embedded, name, None)) for name in called), called
    blocks = set(re.findall(r"^\w*route\[(\w+)\]", text, re.M))
    assert {NATIVE_ROUTES.reply, NATIVE_ROUTES.failure, NATIVE_ROUTES.release} <= blocks
    assert {"CP_SYNC", "CP_RELEASE_TICK", IN_DIALOG_ROUTE, SEAL_ROUTE} <= blocks
    assert "cp_in_dialog" in called
    # The location server's ACKs and BYEs are queued natively for the timer process.
    assert not {"cp_dialog_confirmed", "cp_dialog_ended"} & called
    assert "CP_DIALOG_EVENT" in blocks


def test_the_configs_include_the_dialog_routes_from_where_a_wheel_ships_them():
    """``up``'s config includes the include by its own folder's path, the include its dialog
    routes beside itself: ``assets.SHIPPED`` puts the two side by side in ``_assets``, as they
    are in the source tree."""
    from counterpoise import assets

    turnkey = assets.SOURCE_TREE / "kamailio.cfg"
    (included,) = re.findall(r'^include_file "([^"]+)"', turnkey.read_text(), re.M)
    assert (turnkey.parent / included).resolve() == INCLUDE.resolve()
    (dialog,) = re.findall(r'^include_file "([^"]+)"', INCLUDE.read_text(), re.M)
    assert (INCLUDE.parent / dialog).resolve() == DIALOG_ROUTES.resolve()
    shipped = {name: assets.SOURCE_TREE / source for name, source in assets.SHIPPED.items()}
    assert shipped[INCLUDE.name].resolve() == INCLUDE.resolve()
    assert shipped[dialog].resolve() == DIALOG_ROUTES.resolve()


def selected(node: Node, ksr: FakeKsr, native: bool):
    """An ``Embedded`` that routed an INVITE to A (the config relays it next)."""
    node.pool(A)
    cp = embedded(native)
    ksr.request("INVITE", CALLEE)
    assert cp.cp_select(None) == 1
    return cp


def include_defines() -> dict[str, int]:
    return {
        name: int(value)
        for name, value in re.findall(r"^#!define (\w+) (\d+)$", INCLUDE.read_text(), re.M)
    }


def test_the_native_reply_routes_count_as_python_does():
    from counterpoise import clock
    from counterpoise.core import attempts
    from counterpoise.kamailio import shared

    defines = include_defines()
    assert defines["CP_HEARD_EVERY_MS"] == shared.HEARD_EVERY_MS
    assert defines["CP_INFLIGHT_EPOCH_MS"] == attempts.INFLIGHT_EPOCH_MS
    assert defines["CP_SCRIPT_CYCLE_MS"] == clock.SCRIPT_CYCLE_MS < 2**31


def test_the_script_clock_is_the_wall_clock_in_ms_as_a_native_route_computes_it(
    monkeypatch: pytest.MonkeyPatch,
):
    from counterpoise import clock

    seconds, micros = (
        1_796_580_359,
        329_871,
    )  # route[CP_NOW]: ($TV(sn) mod 10^6) * 1000 + $TV(un) / 1000
    monkeypatch.setattr(clock.time, "time_ns", lambda: seconds * 10**9 + micros * 1000 + 17)
    assert clock.script_ms() == 580_359_329


PROGRESS = Settings.of(location_server=False, hold_queue_ms=0, progress_timeout_ms=3000)


@pytest.mark.parametrize("native", [True, False], ids=["native", "kemi"])
def test_a_native_reply_route_gets_the_relay_time_and_timers_it_times_against(
    ksr: FakeKsr, monkeypatch: pytest.MonkeyPatch, native: bool
):
    from counterpoise.kamailio.embed import Embedded

    node = Node(ksr, monkeypatch, PROGRESS)
    node.pool(A)
    cp = Embedded(PROGRESS, native=native)
    ksr.request("INVITE", CALLEE)
    assert cp.cp_select(None) == 1
    script_ms = node.clock.wall_ms() % 1_000_000_000
    expected = {"cps0": [script_ms], "cpprog": [3000], "cpring": [120_000]} if native else {}
    assert {
        name: ksr.avps[name] for name in ("cps0", "cpprog", "cpring") if name in ksr.avps
    } == expected


def test_a_native_attempt_without_a_progress_timeout_carries_no_timers(node: Node, ksr: FakeKsr):
    selected(node, ksr, native=True)
    assert "cps0" in ksr.avps and "cpprog" not in ksr.avps and "cpring" not in ksr.avps


def test_a_stray_reply_the_native_core_reply_route_asks_about_is_dropped_unless_proven(
    node: Node, ksr: FakeKsr
):
    from ..fakes.edge import edge_counters

    cp = selected(node, ksr, native=True)
    ksr.reply(200, source=("10.0.0.1", 5060))  # no signature in its top Via: no proof
    assert cp.cp_stray_reply(None) == -1
    ksr.reply(200, source=("192.0.2.9", 5060))  # not from the pool
    assert cp.cp_stray_reply(None) == -1
    assert edge_counters(ksr) == {"stray_reply": 2}
    assert not ksr.dropped  # the route drops it, on -1


FROM_A = ("10.0.0.1", 5060)


def test_the_load_a_native_route_kept_from_provisional_replies_counts_with_the_outcome(
    node: Node, ksr: FakeKsr
):
    cp = selected(node, ksr, native=True)
    # route[CP_PROVISIONAL]'s books of a 100 and a 180 from A (their X-CP-Load kept)
    ksr.avps |= {"cpq0": [1], "cpf0": [4], "cpl0": ["tx=1;workers=4;active=1|junk"]}
    ksr.reply(200, headers={"X-CP-Load": "tx=3;workers=4;active=3"}, source=FROM_A)
    assert cp.cp_on_reply(None) == 1
    tally = node.totals()[A]
    assert (tally.load_samples, tally.load_milli_sum, tally.load_headers_rejected) == (2, 1000, 1)
    assert (tally.requests_ok, tally.first_reply_ms_sum) == (1, 4)


def test_a_kemi_reply_route_counts_the_load_of_each_reply_as_it_comes(node: Node, ksr: FakeKsr):
    cp = selected(node, ksr, native=False)
    ksr.reply(180, headers={"X-CP-Load": "tx=1;workers=4;active=1"}, source=FROM_A)
    assert cp.cp_on_reply(None) == 1
    ksr.reply(200, headers={"X-CP-Load": "tx=3;workers=4;active=3"}, source=FROM_A)
    assert cp.cp_on_reply(None) == 1
    tally = node.totals()[A]
    assert (tally.load_samples, tally.load_milli_sum) == (2, 1000)


def test_a_provisional_reply_not_from_the_proxy_is_for_the_native_route_to_drop(
    node: Node, ksr: FakeKsr
):
    from ..fakes.edge import edge_counters

    cp = selected(node, ksr, native=True)
    ksr.reply(180, source=("192.0.2.9", 5060))
    assert cp.cp_on_reply(None) == -1
    assert edge_counters(ksr) == {"foreign_reply": 1}
    ksr.reply(180, source=FROM_A)
    assert cp.cp_on_reply(None) == 1


def test_seal_select_seals_each_branch_as_seal_then_select_do(node: Node, ksr: FakeKsr):
    node.pool(A, B)
    cp = embedded(native=False)
    ksr.routes["cp_on_branch"] = cp.cp_on_branch
    ksr.request("INVITE", CALLEE)
    assert cp.cp_seal_select(None) == 1
    assert ksr.on_branch == "cp_on_branch"
    assert config_relays() == 1 and ksr.relays[-1]["record_route_params"]
    ksr.failure(503)
    assert cp.cp_failure(None) == 1
    assert ksr.relays[-1]["record_route_params"]  # the failover's branch sealed too


def test_seal_select_answers_a_request_without_a_from_tag_and_selects_nothing(
    node: Node, ksr: FakeKsr
):
    node.pool(A)
    cp = embedded(native=True)
    ksr.request("INVITE", CALLEE, from_tag="")
    assert cp.cp_seal_select(None) == 0
    assert ksr.sl_replies == [(400, "Missing From Tag")] and "$du" not in ksr.pvs
    assert node.inflight(A) == 0


HOLDING = Settings.of(location_server=False, shed_hold_ms=0)


def test_a_request_seal_select_held_is_sealed_when_released(
    ksr: FakeKsr, monkeypatch: pytest.MonkeyPatch
):
    from counterpoise.core.routing_table import RoutingEntry
    from counterpoise.kamailio.embed import Embedded

    def queueing(uri: str, limit: int) -> RoutingEntry:
        return RoutingEntry(uri, 1.0, True, limit, long_wait=True)

    node = Node(ksr, monkeypatch, HOLDING)
    node.pool(A)
    node.publish(queueing(A, 1))
    cp = Embedded(HOLDING)
    ksr.request("INVITE", CALLEE, call_id="first")
    assert cp.cp_seal_select(None) == 1
    ksr.request("INVITE", CALLEE, call_id="held")
    assert cp.cp_seal_select(None) == 0
    assert ksr.called("tmx.t_suspend") == [()]
    node.publish(queueing(A, 2))
    node.release(10)
    assert ksr.pvs["$ci"] == "held" and ksr.relays[-1]["duri"] == A
    assert ksr.relays[-1]["record_route_params"]


def test_the_native_route_queues_replies_in_the_form_the_timer_reads():
    """Route CP_FINAL formats its line with the words and marks ``core.queued_reply``
    reads (cfg cannot expand a #!define inside a $_s format: its text is held to the Python
    names here), writes the node's copy of a record in the form ``core.location`` reads, and
    reads the switch and bound the timer publishes."""
    from counterpoise.core import location, queued_reply
    from counterpoise.kamailio import htables

    (body,) = re.findall(r"^route\[CP_FINAL\] \{\n(.*?)^\}", INCLUDE.read_text(), re.M | re.S)
    assert f"$var(cp_event) = $_s({queued_reply.WORD} $var(cp_first_ms) $var(cp_elapsed) " in body
    assert body.count(f'= "{queued_reply.ABSENT}";') == 4
    assert body.count(f'"{queued_reply.HEX_MARK}" + $(') == 2
    assert body.count(f" {queued_reply.HEX_MARK}$(") == 3 + 2
    tags = "x$(ft{s.encode.hexa}) x$(tt{s.encode.hexa})"
    copy = f"$_s({location.NATIVE_LOCAL}$var(cp_proxy_uri) $TV(sn) $TV(un) {tags})"
    assert f"$sht({htables.DIALOGS.name}=>$ci) = {copy};" in body
    read = set(re.findall(rf"\$sht\({htables.ROUTING.name}=>(\w+)\)", body))
    assert read == {htables.DIALOG_RECORDS, htables.REPLY_EVENT_MAX_CHARS}
    assert "route(CP_QUEUE_EVENT);" in body
