"""Counterpoise embedded in Kamailio's own example configs, as Debian ships them: each copy
changed only by the lines docs/embedding.md tells an operator to add (applied as a patch,
which fails loudly when Debian's file moves), routing calls over a pool by Counterpoise's
weights while the config's own checks keep answering."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import stock

from counterpoise import assets, processes
from tests.e2e.conftest import Bed, invite_counts, invite_shares

from . import sipwire
from .test_stock_configs import options

pytestmark = pytest.mark.e2e

PATCHES = assets.SOURCE_TREE / "docs" / "embedding"
INCLUDE = assets.SOURCE_TREE / "embed" / "counterpoise.cfg"
NATIVE_SCRIPT = assets.SOURCE_TREE / "kemi" / "counterpoise_native.py"


def added_lines(patch: str) -> list[str]:
    """The lines a patch adds, blank ones left out."""
    return [
        line[1:]
        for line in patch.splitlines()
        if line.startswith("+") and not line.startswith("+++") and line[1:].strip()
    ]


@pytest.fixture
def native(bed: Bed, tmp_path: Path) -> Iterator[stock.StockKamailio]:
    """The stock native kamailio.cfg with the documented lines, the include beside it, the
    entry script and the pool's Redis given on the command line and in the environment."""
    patch = (PATCHES / "kamailio.cfg.patch").read_text()
    operator = stock.Operator(
        files=(INCLUDE,),
        defines={"CP_SCRIPT": str(NATIVE_SCRIPT)},
        env={"COUNTERPOISE_REDIS_URL": bed.redis_url, "COUNTERPOISE_NODE_ID": "native"},
    )
    with stock.running(stock.NATIVE, tmp_path, patches=[patch], operator=operator) as kamailio:
        bed.balancer_port = kamailio.port
        bed.settings = bed.settings.with_values(node_id="native")
        yield kamailio


def test_the_native_patch_is_short() -> None:
    lines = added_lines((PATCHES / "kamailio.cfg.patch").read_text())
    assert len(lines) <= 15, lines


def test_native_base_weights_split_calls_three_to_one(
    bed: Bed, native: stock.StockKamailio
) -> None:
    a, b = bed.start_downstream("a"), bed.start_downstream("b")
    bed.add_pool((a, 3), (b, 1))

    result = bed.caller(calls=400, rate=50, hold_ms=100).wait(90)

    assert result.failed == 0, result.output[-2000:]
    shares = invite_shares([a, b], {})
    assert shares["a"] == pytest.approx(0.75, abs=0.07), shares
    counts = {ds.name: ds.counts() for ds in (a, b)}
    for name, count in counts.items():  # ACK and BYE by the config's own Record-Route set
        assert count["ack"] == count["invite"] == count["bye"], (name, count)
    assert "Unhandled exception" not in native.log()


def test_native_killed_proxy_costs_no_new_call(bed: Bed, native: stock.StockKamailio) -> None:
    """Its calls time out in the include's failure route, which fails them over; silent, it
    is set aside. (Marking it down takes its probes' timeout: tm's fr_timer, the config's
    30 s.)"""
    a, b = bed.start_downstream("a"), bed.start_downstream("b")
    bed.add_pool((a, 1), (b, 1))
    caller = bed.caller(calls=300, rate=25, hold_ms=200)
    processes.wait_for(lambda: min(invite_counts([a, b]).values()) >= 20, 20, "both proxies in use")

    before_kill = a.counts()
    a.kill()
    # Dialogs established through a cannot end: their BYE follows the Record-Route set to
    # the dead proxy. Every other call must succeed.
    open_on_a = before_kill.get("invite", 0) - before_kill.get("bye", 0)
    result = caller.wait(90)

    assert result.failed <= open_on_a + 1, result.output[-2000:]
    assert "retrying on" in native.log()


def test_native_drained_proxy_gets_no_new_calls(bed: Bed, native: stock.StockKamailio) -> None:
    a, b = bed.start_downstream("a"), bed.start_downstream("b")
    bed.add_pool((a, 1), (b, 1))
    caller = bed.caller(calls=160, rate=20, hold_ms=2000)
    processes.wait_for(lambda: a.counts().get("invite", 0) >= 20, 20, "calls on a")

    drained = bed.cli("proxy", "drain", a.uri)
    assert drained.returncode == 0, drained.stderr
    bed.wait_state(a.uri, ("drained",), timeout_s=5)
    at_drain = a.counts()
    result = caller.wait(90)

    assert result.failed == 0, result.output[-2000:]
    final = a.counts()
    assert final["invite"] == at_drain["invite"], "a drained proxy received new calls"
    assert final["bye"] == final["invite"], "calls in progress on the drained proxy did not end"


def test_native_own_replies_hold(bed: Bed, native: stock.StockKamailio) -> None:
    """Max-Forwards, sanity and its keepalive answer are the config's, pool or not."""
    a = bed.start_downstream("a")
    bed.add_pool((a, 1))
    reply = options(native, (b"Max-Forwards: 70", b"Max-Forwards: 0"))
    assert reply is not None and sipwire.status_of(reply) == 483, reply
    reply = options(native, (b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE"))
    assert reply is not None and sipwire.status_of(reply) == 400, reply
    assert processes.sip_options(*native.address, 1.0) == 200
