"""How many KSR calls (each a round trip from Python into Kamailio's C) each Python entry of
a call makes in the native embedding, through the fake ``KSR``: a bound per entry, so that a
change adding one to the per-call path shows here. The call is the overhead bench's: an
INVITE to the one proxy of the pool, its 100 Trying (native), its 200 (with the proxy's
``X-CP-Load`` or without: a proxy that states no load costs no more)."""

from __future__ import annotations

import pytest

from counterpoise.core.settings import Settings

from ..fakes import native
from ..fakes.edge import CALLEE, Node
from ..fakes.ksr import FakeKsr

A = "sip:10.0.0.1:5060"
FROM_A = ("10.0.0.1", 5060)
BOUNDS = {
    False: {"cp_seal": 3, "cp_select": 19, "cp_seal_select": 19, "cp_on_reply": 14},
    True: {"cp_seal": 3, "cp_select": 24, "cp_seal_select": 24, "cp_on_reply": 20},
}
"""The KSR calls of each entry, by whether the location server is on."""
INVITE_ENTRIES = [("cp_seal_select",), ("cp_seal", "cp_select")]
"""What a native config calls for an INVITE: docs/embedding/minimal.cfg's one call, or the
two it may make instead."""


def one_call(
    node: Node, ksr: FakeKsr, cp, invite: tuple[str, ...], n: int, load: dict[str, str]
) -> dict[str, int]:
    """The KSR calls of each Python entry of call ``n``, as a native config makes them."""
    counts = {}
    ksr.request("INVITE", CALLEE, call_id=f"call-{n}@198.51.100.7")
    for name in (*invite, "cp_on_reply"):
        if name == "cp_on_reply":
            assert ksr.module.tm.t_relay() == 1  # the config's; CP_BRANCH seals the branch
            assert ksr.relays[-1]["record_route_params"]
            ksr.avps["cpq0"] = [2]  # route[CP_PROVISIONAL]'s book of the proxy's 100 Trying
            node.clock.advance(5)
            ksr.reply(200, source=FROM_A, headers=load)
        ksr.calls.clear()
        assert getattr(cp, name)(None) == 1
        counts[name] = len(ksr.calls)
    return counts


@pytest.mark.parametrize(
    "load", [{"X-CP-Load": "tx=1;workers=4;active=1"}, {}], ids=["load", "no-load"]
)
@pytest.mark.parametrize("invite", INVITE_ENTRIES, ids=lambda entries: "+".join(entries))
@pytest.mark.parametrize("location_server", [False, True], ids=["location-off", "location-on"])
def test_each_python_entry_of_a_call_stays_within_its_ksr_calls(
    ksr: FakeKsr,
    monkeypatch: pytest.MonkeyPatch,
    location_server: bool,
    invite: tuple[str, ...],
    load: dict[str, str],
):
    from counterpoise.kamailio.embed import Embedded

    settings = Settings.of(location_server=location_server)
    node = Node(ksr, monkeypatch, settings)
    node.pool(A)
    cp = Embedded(settings, native=True)
    ksr.routes["CP_BRANCH"] = lambda msg: native.seal(ksr)
    one_call(node, ksr, cp, invite, 1, load)  # the worker's first request reads the table
    counts = one_call(node, ksr, cp, invite, 2, load)
    bounds = BOUNDS[location_server]
    over = {name: (count, bounds[name]) for name, count in counts.items() if count > bounds[name]}
    assert not over, over
    assert node.totals()[A].requests_ok == 2
