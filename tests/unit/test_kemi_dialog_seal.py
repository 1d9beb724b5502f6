"""The edge's side of the seal: each branch of a dialog-forming request records the route
sealed with that branch's proxy; the key ring reaches the workers through shared memory."""

from __future__ import annotations

import pytest

from counterpoise.core import dialog_seal
from counterpoise.core.dialog_seal import DialogKey
from counterpoise.core.settings import Settings
from counterpoise.kamailio import htables

from ..fakes.edge import Node
from ..fakes.ksr import FakeKsr
from .test_dialog_seal import derived_keys
from .test_kemi_edge import edge_counters

A, B = "sip:10.0.0.1:5060", "sip:10.0.0.2:5060;transport=tcp"
RELOAD_MS = 1000
"""``kamailio.dialog_keys.RELOAD_MS`` (imported only once the fake KSR is installed)."""


@pytest.fixture
def node(ksr: FakeKsr, monkeypatch: pytest.MonkeyPatch) -> Node:
    return Node(ksr, monkeypatch, Settings.of(location_server=False))


def seal_of(node: Node, params: str | None) -> dialog_seal.Seal | None:
    assert params is not None
    secrets = {key_id: key.secret for key_id, key in node.dialog_keys.ring()[0].items()}
    return dialog_seal.read_seal(f"sip:lb;lr;ftag=from-tag-1{params}", "call-1@x", secrets.get)


def test_each_branch_is_sealed_with_its_own_proxy(node: Node, ksr: FakeKsr):
    node.pool(A, B, **{A: 1000.0, B: 0.001})
    node.route("INVITE", call_id="call-1@x", source="198.51.100.7", source_port=5062)
    node.reply(503, after_ms=10)
    node.fail(503)
    first, second = (seal_of(node, relay["record_route_params"]) for relay in ksr.relays)
    caller = dialog_seal.caller_hop("udp", "198.51.100.7", 5062)
    assert first == dialog_seal.Seal("call-1@x", "from-tag-1", dialog_seal.proxy_hop(A), caller)  # type: ignore[arg-type]
    assert second is not None and second.proxy == dialog_seal.proxy_hop(B)
    assert second.caller == caller  # the failure route runs on the caller's request
    assert second.proxy.uri() == "sip:10.0.0.2:5060;transport=tcp"


@pytest.mark.parametrize("method", ["SUBSCRIBE", "REFER"])
def test_every_dialog_forming_request_is_sealed(node: Node, ksr: FakeKsr, method: str):
    node.pool(A)
    node.route(method, call_id="call-1@x")
    assert seal_of(node, ksr.relays[0]["record_route_params"]) is not None


def test_other_requests_record_no_route(node: Node, ksr: FakeKsr):
    node.pool(A)
    node.route("MESSAGE")
    assert len(ksr.relays) == 1 and not ksr.record_routed


def test_without_a_from_tag_or_a_key_no_dialog_is_made(node: Node, ksr: FakeKsr):
    node.pool(A)
    node.route("INVITE", from_tag="")
    assert ksr.relays == [] and ksr.sl_replies == [(400, "Missing From Tag")]
    ksr.htables[htables.DIALOG_KEYS.name].clear()  # no key loaded yet
    node.route("INVITE")
    assert ksr.relays == [] and ksr.sl_replies == [(503, "Service Unavailable")]
    assert edge_counters(ksr)["no_dialog_key"] == 1
    node.route("MESSAGE")  # no dialog: routed as ever
    assert len(ksr.relays) == 1


def test_the_first_node_creates_the_first_key_and_rotations_reach_the_workers(
    node: Node, ksr: FakeKsr
):
    node.pool(A)
    table = ksr.htables[htables.DIALOG_KEYS.name]
    assert set(node.dialog_keys.fields) == {"1"} and table[htables.DIALOG_SIGNING_KEY] == "1"
    soon = node.clock.wall_ms() + dialog_seal.ACTIVATION_DELAY_MS
    node.dialog_keys.fields["2"] = DialogKey("2", soon, bytes(range(32))).encode()
    node.tick(RELOAD_MS)
    assert "2" in table and table[htables.DIALOG_SIGNING_KEY] == "1"  # loaded, not yet active
    node.tick(dialog_seal.ACTIVATION_DELAY_MS)
    assert table[htables.DIALOG_SIGNING_KEY] == "2"
    del node.dialog_keys.fields["1"]
    node.dialog_keys.fields["3"] = "not a key"
    node.tick(RELOAD_MS)
    assert "1" not in table and "3" not in table
    assert any("dialog key 3 left out" in line for line in node.logs + ksr.logged("notice"))


def test_a_key_is_read_and_parsed_anew_only_when_the_published_version_moves(
    node: Node, ksr: FakeKsr
):
    from counterpoise.kamailio import dialog_keys, shared

    table = ksr.htables[htables.DIALOG_KEYS.name]
    keys = dialog_keys.WorkerKeys()
    table["7"] = DialogKey("7", 0, bytes(range(32))).encode()
    keys.follow(1)
    assert keys.secret("7") == bytes(range(32))
    ksr.calls.clear()
    assert keys.secret("7") == bytes(range(32))  # the parsed copy
    assert ksr.called("htable.sht_get") == []
    table["7"] = DialogKey("7", 0, bytes(range(1, 33))).encode()
    keys.follow(2)
    assert keys.secret("7") == bytes(range(1, 33))
    table["7"] = "not a key"
    keys.follow(3)
    assert keys.secret("7") is None
    table["7"] = DialogKey("7", 0, bytes(range(32))).encode()
    view = shared.WorkerView()
    view.refresh()
    keys.follow(view.version)
    assert keys.secret("7") == bytes(range(32))
    del table["7"]  # a key removed from the ring stops verifying at the next request
    shared.bump_version()  # what publish does after a change
    view.refresh()
    keys.follow(view.version)
    assert keys.secret("7") is None


def test_each_key_is_published_with_its_derived_keys_apart_before_the_signing_id(
    node: Node, ksr: FakeKsr
):
    """The config's dialog routes sign with a key's inner and outer keys as they stand
    (``native_mac``): no parse per message; a route that reads the signing id finds them."""
    from counterpoise.kamailio import dialog_keys

    table = ksr.htables[htables.DIALOG_KEYS.name]
    ksr.calls.clear()
    secret = bytes(range(32))
    dialog_keys.publish({"4": DialogKey("4", 0, secret)}, node.clock.wall_ms())
    inner, outer = derived_keys(secret)
    assert (table["ki 4"], table["ko 4"]) == (inner, outer)
    assert secret.hex() not in (table["ki 4"], table["ko 4"])
    written = [args[1] for args in ksr.called("htable.sht_sets")]
    signing = written.index(htables.DIALOG_SIGNING_KEY)
    assert written.index("ki 4") < signing and written.index("ko 4") < signing
    dialog_keys.publish({}, node.clock.wall_ms())
    assert "ki 4" not in table and "ko 4" not in table


def test_a_reload_that_changes_nothing_leaves_the_published_version_alone(node: Node, ksr: FakeKsr):
    from counterpoise.kamailio import dialog_keys

    routing = ksr.htables[htables.ROUTING.name]
    ring = {"1": DialogKey("1", 0, bytes(range(32)))}
    dialog_keys.publish(ring, node.clock.wall_ms())
    version = routing[htables.ROUTING_VERSION]
    dialog_keys.publish(ring, node.clock.wall_ms())  # the ring read again, as it was
    assert routing[htables.ROUTING_VERSION] == version
    ring["2"] = DialogKey("2", 0, bytes(range(1, 33)))
    dialog_keys.publish(ring, node.clock.wall_ms())
    assert routing[htables.ROUTING_VERSION] == version + 1
    assert ksr.htables[htables.DIALOG_KEYS.name][htables.DIALOG_SIGNING_KEY] == "2"


def test_the_timer_publishes_what_the_configs_dialog_routes_read(node: Node, ksr: FakeKsr):
    """The pool's addresses (``dialog_seal.source_keys``), the in-dialog timer, the dialog
    records' switch, and the edge counters those routes count, at 0 (``$shtinc`` creates
    none); a proxy leaving the pool leaves the addresses."""
    node.pool(A, B)
    addresses = ksr.htables[htables.POOL_ADDRESSES.name]
    both = {A: frozenset({("10.0.0.1", 5060)}), B: frozenset({("10.0.0.2", 5060)})}
    assert set(addresses) == dialog_seal.source_keys(both)
    assert "sip:tcp:10.0.0.2:5060|10.0.0.2" in addresses and "10.0.0.1:5060" in addresses
    routing = ksr.htables[htables.ROUTING.name]
    assert routing[htables.IN_DIALOG_FR_TIMER_MS] == 30_000
    assert routing[htables.DIALOG_RECORDS] == 0
    edge = ksr.htables[htables.EDGE_COUNTERS.name]
    assert {name: edge[name] for name in htables.NATIVE_EDGE_COUNTERS} == {
        "relay_denied": 0,
        "unsealed": 0,
        "shed": 0,
        "dropped_flood": 0,
        "banned": 0,
        "dropped_banned": 0,
        "dialog_events_dropped": 0,
        "reply_events_full": 0,
    }
    # The native queue of dialog events: its slot numbers from 0, its bounds.
    assert routing[htables.DIALOG_EVENT_SEQ] == 0 and routing[htables.DIALOG_EVENT_READ] == 0
    assert routing[htables.DIALOG_EVENTS_MAX] == 4096
    assert routing[htables.DIALOG_EVENT_MAX_CHARS] == 2 * (256 + 2 * 128) + 64  # ids in hex
    node.store.remove(B)
    node.tick(1000)
    assert set(addresses) == dialog_seal.source_keys({A: both[A]})


def test_the_edge_counters_add_what_the_config_counted(node: Node, ksr: FakeKsr):
    from counterpoise.kamailio import shared

    node.pool(A)
    ksr.htables[htables.EDGE_COUNTERS.name]["relay_denied"] = 3
    ksr.htables[htables.EDGE_COUNTERS.name]["4242"] = "relay_denied=2 stray_reply=1"
    assert shared.SharedTable().read_counters() == {"relay_denied": 5, "stray_reply": 1}


def test_a_bye_ends_its_dialog_record_only_once_the_config_relayed_it(
    ksr: FakeKsr, monkeypatch: pytest.MonkeyPatch
):
    """Under KEMI the config's in-dialog route judges the seal; the Python that called it
    ends the record of a BYE it relayed, never of one it refused."""
    node = Node(ksr, monkeypatch, Settings.of(location_server=True))
    node.pool(A)
    ended: list[object] = []
    assert node.balancer.location is not None
    monkeypatch.setattr(node.balancer.location, "dialog_ended", ended.append)
    route = node.sealed_route(A)
    node.route("BYE", to_tag="callee", headers={"Route": route.replace("cpd3=1.", "cpd3=1.a")})
    assert ksr.sl_replies == [(403, "Forbidden")] and ended == []
    node.route("BYE", to_tag="callee", headers={"Route": route})
    assert len(ksr.relays) == 1 and len(ended) == 1
