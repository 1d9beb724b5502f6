"""How many KSR calls (each a round trip from Python into Kamailio's C) each Python entry of
a call makes in the native embedding, through the fake ``KSR``: a bound per entry, so that a
change adding one to the per-call path shows here. The call is the overhead bench's: an
INVITE to the one proxy of the pool, its 100 Trying (native), its 200."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from counterpoise.core.settings import Settings

from ..fakes import native
from ..fakes.edge import CALLEE, Node
from ..fakes.ksr import FakeKsr

A = "sip:10.0.0.1:5060"
FROM_A = ("10.0.0.1", 5060)
BOUNDS = {
    False: {"cp_seal": 3, "cp_select": 21, "cp_on_reply": 16},
    True: {"cp_seal": 3, "cp_select": 26, "cp_on_reply": 22},
}
"""The KSR calls of each entry, by whether the location server is on."""


def calls_of(ksr: FakeKsr, entry: Callable[[None], int]) -> tuple[int, int]:
    """What ``entry`` returned, and the KSR calls it made."""
    ksr.calls.clear()
    result = entry(None)
    return result, len(ksr.calls)


def one_call(node: Node, ksr: FakeKsr, cp, call_id: str) -> dict[str, int]:
    """The KSR calls of each Python entry of one call, as a native config makes them."""
    counts = {}
    ksr.request("INVITE", CALLEE, call_id=call_id)
    for entry in (cp.cp_seal, cp.cp_select):
        result, counts[entry.__name__] = calls_of(ksr, entry)
        assert result == 1
    assert ksr.module.tm.t_relay() == 1  # the config's; CP_BRANCH seals the branch
    assert ksr.relays[-1]["record_route_params"]
    ksr.avps["cpq0"] = [2]  # route[CP_PROVISIONAL]'s book of the proxy's 100 Trying
    node.clock.advance(5)
    ksr.reply(200, source=FROM_A, headers={"X-CP-Load": "tx=1;workers=4;active=1"})
    result, counts["cp_on_reply"] = calls_of(ksr, cp.cp_on_reply)
    assert result == 1
    return counts


@pytest.mark.parametrize("location_server", [False, True], ids=["location-off", "location-on"])
def test_each_python_entry_of_a_call_stays_within_its_ksr_calls(
    ksr: FakeKsr, monkeypatch: pytest.MonkeyPatch, location_server: bool
):
    from counterpoise.kamailio.embed import Embedded

    settings = Settings.of(location_server=location_server)
    node = Node(ksr, monkeypatch, settings)
    node.pool(A)
    cp = Embedded(settings, native=True)
    ksr.routes["CP_BRANCH"] = lambda msg: native.seal(ksr)
    one_call(node, ksr, cp, "first@198.51.100.7")  # the worker's first request reads the table
    counts = one_call(node, ksr, cp, "second@198.51.100.7")
    bounds = BOUNDS[location_server]
    over = {name: (count, bounds[name]) for name, count in counts.items() if count > bounds[name]}
    assert not over, over
    assert node.totals()[A].requests_ok == 2
