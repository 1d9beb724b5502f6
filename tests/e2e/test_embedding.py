"""Counterpoise embedded in Kamailio's own example configs, as Debian ships them: each copy
changed only by the lines docs/embedding.md tells an operator to add (applied as a patch,
which fails loudly when Debian's file moves), routing calls over a pool by Counterpoise's
weights while the config's own checks keep answering.

The KEMI Python example runs with its MySQL-backed features on a MariaDB made by Kamailio's
tools; its callers authenticate as the subscriber Alice. The native kamailio.cfg runs with
its defaults."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import sipp_messages, stock, testbed

from counterpoise import assets, processes
from counterpoise.core.settings import Settings, runtime_values
from counterpoise.core.tally import Tally
from counterpoise.monitoring.read import scrape, value
from tests.e2e.conftest import Bed, invite_counts, invite_shares
from tests.e2e.test_balancer import _wait_share as wait_share
from tests.e2e.test_dialog_records import records
from tests.e2e.test_location import holders
from tests.e2e.test_shedding import SHED_REPLY_MAX_MS

from . import sipwire
from .test_stock_configs import invite, options

pytestmark = pytest.mark.e2e

PATCHES = assets.SOURCE_TREE / "docs" / "embedding"
INCLUDE = assets.SOURCE_TREE / "embed" / "counterpoise.cfg"
DIALOG_ROUTES = assets.SOURCE_TREE / "embed" / "counterpoise-dialog.cfg"
"""What the include includes, beside it."""
NATIVE_SCRIPT = assets.SOURCE_TREE / "kemi" / "counterpoise_native.py"
PATCH_OF = {
    stock.NATIVE.name: PATCHES / "kamailio.cfg.patch",
    stock.KEMI_PYTHON.name: PATCHES / "kamailio-basic-kemi.patch",
}
"""The documented lines, per config."""
CALLER = ("alice", "alice-secret")
"""The subscriber the calls come from, where the config authenticates."""
BOB = ("bob", "bob-secret")
NODE = "embedded"


def added_lines(patch: str) -> list[str]:
    """The lines a patch adds (a changed line counts once), blank ones left out."""
    return [
        line[1:]
        for line in patch.splitlines()
        if line.startswith("+") and not line.startswith("+++") and line[1:].strip()
    ]


@pytest.mark.parametrize("name", sorted(PATCH_OF))
def test_a_patch_adds_at_most_15_lines(name: str) -> None:
    lines = added_lines(PATCH_OF[name].read_text())
    print(f"{name}: {len(lines)} lines")
    assert len(lines) <= 15, lines


@pytest.fixture
def operator_env() -> dict[str, str]:
    """Settings of the embedded Counterpoise beside the Redis and the node name; a test
    parametrizes it for others."""
    return {}


@pytest.fixture(params=[stock.NATIVE, stock.KEMI_PYTHON], ids=lambda config: config.name)
def embedded(
    request: pytest.FixtureRequest, bed: Bed, tmp_path: Path, operator_env: dict[str, str]
) -> Iterator[stock.StockKamailio]:
    """A stock config with the documented lines, the include beside it; the entry script
    (native) and the pool's Redis given on the command line and in the environment."""
    config: stock.StockConfig = request.param
    operator = stock.Operator(
        files=(INCLUDE, DIALOG_ROUTES),
        defines={"CP_SCRIPT": str(NATIVE_SCRIPT)} if config is stock.NATIVE else {},
        env={
            "COUNTERPOISE_REDIS_URL": bed.redis_url,
            "COUNTERPOISE_NODE_ID": NODE,
            **operator_env,
        },
    )
    patch = PATCH_OF[config.name].read_text()
    with stock.running(config, tmp_path, [CALLER, BOB], [patch], operator) as kamailio:
        bed.balancer_port = kamailio.port
        bed.settings = bed.settings.with_values(node_id=NODE)
        yield kamailio


def caller(
    bed: Bed,
    kamailio: stock.StockKamailio,
    calls: int,
    rate: float,
    hold_ms: int,
    extra: tuple[str, ...] = (),
) -> testbed.Caller:
    """SIPp calling through ``kamailio``: as Alice answering its challenges where it
    authenticates."""
    if not kamailio.config.authenticates():
        return bed.caller(calls, rate, hold_ms, extra=extra)
    user, password = CALLER
    auth = ("-key", "caller", user, "-au", user, "-ap", password)
    return bed.caller(calls, rate, hold_ms, scenario="uac-auth.xml", extra=auth + extra)


def test_base_weights_split_calls_three_to_one(bed: Bed, embedded: stock.StockKamailio) -> None:
    a, b = bed.start_downstream("a"), bed.start_downstream("b")
    bed.add_pool((a, 3), (b, 1))

    result = caller(bed, embedded, calls=400, rate=50, hold_ms=100).wait(90)

    assert result.failed == 0, result.output[-2000:]
    shares = invite_shares([a, b], {})
    assert shares["a"] == pytest.approx(0.75, abs=0.07), shares
    for ds in (a, b):  # ACK and BYE by the config's own Record-Route set
        count = ds.counts()
        assert count["ack"] == count["invite"] == count["bye"], (ds.name, count)
    assert "Traceback" not in embedded.log()
    # The probes' replies reach Counterpoise (the include's uac event route or callback).
    processes.wait_for(
        lambda: all(bed.rows()[ds.uri]["probe_ms"] is not None for ds in (a, b)),
        10,
        "probe answers counted",
    )


def test_a_killed_proxy_costs_no_new_call(bed: Bed, embedded: stock.StockKamailio) -> None:
    """Its calls time out in Counterpoise's failure route, which fails them over; silent, it
    is set aside. (Marking it down takes its probes' timeout: tm's fr_timer, these configs'
    30 s.)"""
    a, b = bed.start_downstream("a"), bed.start_downstream("b")
    bed.add_pool((a, 1), (b, 1))
    started_s = time.monotonic()
    calls = caller(bed, embedded, calls=300, rate=25, hold_ms=200)
    processes.wait_for(lambda: min(invite_counts([a, b]).values()) >= 20, 20, "both proxies in use")

    before_kill = a.counts()
    a.kill()
    killed_after_s = time.monotonic() - started_s
    # Dialogs established through a cannot end: their BYE follows the Record-Route set to
    # the dead proxy. Every other call must succeed.
    open_on_a = before_kill.get("invite", 0) - before_kill.get("bye", 0)
    result = calls.wait(90)

    assert result.failed <= open_on_a + 1, result.output[-2000:]
    log = embedded.log()
    # On failure, Counterpoise's own lines say what became of the killed proxy's calls, and
    # the run's numbers whether any call was still to place when a died (once, in a whole
    # slow lane, none of its lines came after the kill).
    ours = [line for line in log.splitlines() if "counterpoise" in line]
    numbers = (
        f"a killed {killed_after_s:.1f} s after the first of 300 calls at 25/s, having had "
        f"{before_kill}; b had {b.counts()} at the end; {result.successful} calls succeeded, "
        f"{result.failed} failed"
    )
    assert "retrying on" in log, "\n".join([numbers, *ours[-40:]])


def test_a_drained_proxy_gets_no_new_calls(bed: Bed, embedded: stock.StockKamailio) -> None:
    a, b = bed.start_downstream("a"), bed.start_downstream("b")
    bed.add_pool((a, 1), (b, 1))
    calls = caller(bed, embedded, calls=160, rate=20, hold_ms=2000)
    processes.wait_for(lambda: a.counts().get("invite", 0) >= 20, 20, "calls on a")

    drained = bed.cli("proxy", "drain", a.uri)
    assert drained.returncode == 0, drained.stderr
    bed.wait_state(a.uri, ("drained",), timeout_s=5)
    watched = bed.cli("watch", "--once", "--json")
    assert watched.returncode == 0, watched.stderr
    assert f'"{a.uri}"' in watched.stdout and f'"{NODE}"' in watched.stdout, watched.stdout
    at_drain = a.counts()
    result = calls.wait(90)

    assert result.failed == 0, result.output[-2000:]
    final = a.counts()
    assert final["invite"] == at_drain["invite"], "a drained proxy received new calls"
    assert final["bye"] == final["invite"], "calls in progress on the drained proxy did not end"


def test_a_slowed_proxy_loses_share(bed: Bed, embedded: stock.StockKamailio) -> None:
    a = bed.start_downstream("a", workers=4)
    b = bed.start_downstream("b", workers=4)
    bed.add_pool((a, 1), (b, 1))
    calls = caller(bed, embedded, calls=1200, rate=40, hold_ms=100)
    processes.wait_for(lambda: min(invite_counts([a, b]).values()) >= 20, 20, "both proxies in use")

    a.set_delay_ms(250)  # capacity 4 workers / 0.25 s = 16 calls/s, of the 40 offered
    wait_share(a, [a, b], lambda share: share < 0.2, 15, "slow proxy's share below 20 %")
    calls.stop()


def test_a_pinned_user_reaches_her_proxy(bed: Bed, embedded: stock.StockKamailio) -> None:
    """The location server's record of the callee (an operator's pin here) wins over the
    weights."""
    a, b = bed.start_downstream("a"), bed.start_downstream("b")
    bed.add_pool((a, 3), (b, 1))
    pinned = bed.cli("location", "pin", f"service@{embedded.address[0]}", b.uri)
    assert pinned.returncode == 0, pinned.stderr

    result = caller(bed, embedded, calls=20, rate=20, hold_ms=100).wait(60)

    assert result.failed == 0, result.output[-2000:]
    assert invite_counts([a, b]) == {"a": 0, "b": 20}


def test_a_registered_user_is_called_through_the_registrar_that_holds_her(
    bed: Bed, embedded: stock.StockKamailio, tmp_path: Path
) -> None:
    """Bob's REGISTER goes to a registrar of the pool picked by weight (its 2xx records
    him); Alice's calls to him all reach that one."""
    pool = [bed.start_downstream(name, registrar=True) for name in ("a", "b")]
    bed.add_pool(*((ds, 1) for ds in pool))
    bob_port = processes.free_port()
    registered = stock.register(embedded, tmp_path, "bob", BOB[1], bob_port)
    assert registered.successful == 1, registered.output[-2000:]
    (holder,) = holders(bed, ["bob"]).values()
    bed.adopt(testbed.start_uas(bob_port, tmp_path))

    for _ in range(4):
        result = stock.call(embedded, tmp_path, *CALLER, "bob", processes.free_port())
        assert result.successful == 1, result.output[-2000:]

    assert {ds.uri: ds.counts().get("invite", 0) for ds in pool} == {
        ds.uri: 4 if ds.uri == holder else 0 for ds in pool
    }


def test_calls_beyond_the_pools_capacity_are_held_and_all_answered(
    bed: Bed, embedded: stock.StockKamailio
) -> None:
    """``select`` holds them (0: the config's route stops); the release timer resumes each
    in the include's release route (native) or the inherited method (KEMI), which relays it
    with the config's Record-Route. Holding alone: shedding is off, the default."""
    a, b = bed.start_downstream("a", workers=1), bed.start_downstream("b", workers=1)
    bed.add_pool((a, 1), (b, 1))
    # One worker each, 200 ms per INVITE: 10 calls/s for the pool, offered 15 calls/s.
    a.set_delay_ms(200)
    b.set_delay_ms(200)

    result = caller(bed, embedded, calls=90, rate=15, hold_ms=100).wait(90)

    held = bed.counters("cpstat", name=embedded.config.name)
    assert held.get("held", 0) > 0, held
    assert result.failed == 0, result.output[-2000:]
    assert "Traceback" not in embedded.log()


@pytest.mark.parametrize("operator_env", [{"COUNTERPOISE_SHED_HOLD_MS": "100"}], ids=["shed"])
def test_calls_far_beyond_the_pools_capacity_are_shed_with_a_fast_503(
    bed: Bed, embedded: stock.StockKamailio
) -> None:
    """``select`` answers the excess 503 with Retry-After itself (0: the config's route
    stops, answering nothing more); the calls it admits are all answered."""
    a, b = bed.start_downstream("a", workers=1), bed.start_downstream("b", workers=1)
    bed.add_pool((a, 1), (b, 1))
    # One worker each, 200 ms per INVITE: 10 calls/s for the pool, offered 20 calls/s.
    a.set_delay_ms(200)
    b.set_delay_ms(200)

    sipp = caller(bed, embedded, calls=120, rate=20, hold_ms=100, extra=sipp_messages.TRACE_ARGS)
    result = sipp.wait(120)

    shed = bed.counters("cpstat", name=embedded.config.name).get("shed", 0)
    refused = sipp_messages.rejections(sipp_messages.trace_file(sipp))
    assert shed > 0 and len(refused) == shed
    assert all(r.status == 503 and r.retry_after == 1 for r in refused), refused
    assert max(r.after_ms for r in refused) <= SHED_REPLY_MAX_MS
    assert result.failed == shed, result.output[-2000:]
    assert "Traceback" not in embedded.log()


def test_its_own_replies_hold(bed: Bed, embedded: stock.StockKamailio) -> None:
    """Max-Forwards, sanity, the digest challenge and the keepalive answer are the
    config's own, before Counterpoise is asked."""
    a = bed.start_downstream("a")
    bed.add_pool((a, 1))
    reply = options(embedded, (b"Max-Forwards: 70", b"Max-Forwards: 0"))
    assert reply is not None and sipwire.status_of(reply) == 483, reply
    reply = options(embedded, (b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE"))
    assert reply is not None and sipwire.status_of(reply) == 400, reply
    if embedded.config.authenticates():
        reply = invite(embedded)
        assert reply is not None and sipwire.status_of(reply) == 407, reply
    assert processes.sip_options(*embedded.address, 1.0) == 200


MINIMAL = stock.StockConfig("minimal", PATCHES / "minimal.cfg")
"""The docs' config of one's own around Counterpoise."""


def test_the_docs_show_the_minimal_config_as_tested() -> None:
    docs = (PATCHES.parent / "embedding.md").read_text()
    assert MINIMAL.cfg.read_text() in docs


def test_a_minimal_config_routes_by_weight_and_relays_in_dialog(bed: Bed, tmp_path: Path) -> None:
    """Its in-dialog requests go through ``CP_IN_DIALOG``, its replies through
    ``CP_CORE_REPLY``: the ACK and BYE of every call reach the proxy of its INVITE, relayed
    by the config's route, and the location server's records follow them (its ACK confirms
    one, its BYE ends it). The native reply routes keep the books Python keeps in a KEMI
    config: each proxy's signs of life, and each ringing call out of its proxy's work
    (``cpwait`` back to 0)."""
    with minimal(bed, tmp_path) as kamailio:
        a, b = bed.start_downstream("a"), bed.start_downstream("b")
        bed.add_pool((a, 3), (b, 1))

        result = bed.caller(calls=200, rate=40, hold_ms=100).wait(60)

        assert result.failed == 0, result.output[-2000:]
        assert invite_shares([a, b], {})["a"] == pytest.approx(0.75, abs=0.1)
        for ds in (a, b):
            count = ds.counts()
            assert count["ack"] == count["invite"] == count["bye"], (ds.name, count)
        ctl = processes.ctl_socket(kamailio.run_dir)
        assert testbed.counters(ctl, "cpstat")["in_dialog_record_route"] >= 2 * 200
        assert "relay_denied" not in testbed.counters(ctl, "cpedge")
        processes.wait_for(
            lambda: records(bed) == {}, 5, "every call's dialog record ended by its BYE"
        )
        # Each sealed ACK's record confirmed by the timer process, at its next tick.
        processes.wait_for(
            lambda: testbed.counters(ctl, "cploc").get("confirmed", 0) >= 200,
            5,
            "every call's record confirmed",
        )
        assert testbed.counters(ctl, "cploc")["confirmed"] == 200
        assert "Traceback" not in kamailio.log()
        assert set(htable(ctl, "cpproxy").values()) == {a.uri, b.uri}
        heard = {key.split(" ", 1)[1] for key in htable(ctl, "cpheard")}
        assert heard == {a.uri, b.uri}
        awaiting = htable(ctl, "cpwait")
        assert awaiting and all(int(count) == 0 for count in awaiting.values()), awaiting
        # Each call's 200 counted by CP_FINAL, out of flight, and queued beside its ACK and
        # BYE; the timer counted each outcome once, and started each record its ACK confirmed.
        inflight = htable(ctl, "cpinf")
        assert inflight and all(int(count) == 0 for count in inflight.values()), inflight
        assert int(htable(ctl, "cp")["dialog_event_seq"]) == 3 * 200
        processes.wait_for(
            lambda: answered_attempts(ctl) == 200, 5, "every call's outcome in the tallies"
        )
        edge = testbed.counters(ctl, "cpedge")
        assert "reply_events_full" not in edge and "queued_event_unreadable" not in edge
        # The proxies' X-CP-Load of each 200, hex-encoded in its line, read back usable.
        loads = [Tally.decode(text) for text in htable(ctl, "cptally").values()]
        assert sum(tally.load_samples for tally in loads) >= 200
        assert sum(tally.load_headers_rejected for tally in loads) == 0


def answered_attempts(ctl: Path) -> int:
    """The attempts the node's tallies count as answered by their proxy."""
    return sum(Tally.decode(text).requests_ok for text in htable(ctl, "cptally").values())


def test_a_ringing_call_leaves_its_proxys_work_in_the_native_reply_route(
    bed: Bed, tmp_path: Path
) -> None:
    """The 180 counts the call out of its proxy's work (``cpwait``) while it stays in
    flight (``cpinf``): ``CP_PROVISIONAL``, not Python's final reply route, did it."""
    bed.start_uas(ring_ms=4000)
    with minimal(bed, tmp_path) as kamailio:
        a = bed.start_downstream("a")
        bed.add_pool((a, 1))
        calls = bed.caller(calls=10, rate=10, hold_ms=100)
        ctl = processes.ctl_socket(kamailio.run_dir)

        def ringing() -> bool:
            awaiting = sum(int(count) for count in htable(ctl, "cpwait").values())
            inflight = sum(int(count) for count in htable(ctl, "cpinf").values())
            return inflight >= 5 and awaiting == 0

        processes.wait_for(ringing, 4, "calls ringing, in flight, out of the proxy's work")
        result = calls.wait(60)
        assert result.failed == 0, result.output[-2000:]


def test_a_provisional_reply_not_from_the_proxy_goes_no_further(bed: Bed, tmp_path: Path) -> None:
    """tm matches a reply by its Via branch alone: a 180 with the right branch from another
    address is dropped (Python judges it; the native route drops it), the proxy's own
    passes."""
    proxy, caller, forger = (sipwire.Peer(f"127.0.0.{n}") for n in (31, 32, 33))
    with minimal(bed, tmp_path) as kamailio:
        bed.store.add(proxy.uri, 1.0)
        bed.wait_state(proxy.uri, ("up", "slowstart"))
        caller.send(
            sipwire.request("INVITE", "sip:bob@example.com", caller.address), kamailio.address
        )
        relayed = processes.wait_for(
            lambda: arrived(proxy, lambda m: sipwire.method_of(m) == "INVITE"),
            5,
            "the INVITE relayed to the proxy",
        )
        forger.send(sipwire.reply(relayed, 180, "Forged", tag="f"), kamailio.address)
        proxy.send(sipwire.reply(relayed, 180, "Ringing", tag="p"), kamailio.address)
        ringing = processes.wait_for(
            lambda: arrived(caller, lambda m: sipwire.status_of(m) == 180),
            5,
            "a 180 at the caller",
        )
        assert b"Ringing" in ringing
        ctl = processes.ctl_socket(kamailio.run_dir)
        processes.wait_for(
            lambda: testbed.counters(ctl, "cpedge").get("foreign_reply") == 1,
            5,
            "the forged 180 counted",
        )
        assert not any(b"Forged" in message for message in caller.received)
    for peer in (proxy, caller, forger):
        peer.close()


def arrived(peer: sipwire.Peer, wanted: Callable[[bytes], bool]) -> bytes | None:
    """The next message ``peer`` gets within 0.2 s, if it is one ``wanted``."""
    message = peer.recv(0.2)
    return message if message is not None and wanted(message) else None


@contextlib.contextmanager
def minimal(bed: Bed, tmp_path: Path, **env: str) -> Iterator[stock.StockKamailio]:
    """The docs' minimal config, running with Counterpoise on this test's Redis (``env``:
    more of its settings, as ``COUNTERPOISE_*`` variables)."""
    operator = stock.Operator(
        files=(INCLUDE, DIALOG_ROUTES),
        defines={"CP_SCRIPT": str(NATIVE_SCRIPT)},
        env={"COUNTERPOISE_REDIS_URL": bed.redis_url, "COUNTERPOISE_NODE_ID": NODE, **env},
    )
    with stock.running(MINIMAL, tmp_path, operator=operator) as kamailio:
        bed.balancer_port = kamailio.port
        bed.settings = bed.settings.with_values(node_id=NODE)
        yield kamailio


def test_without_dialog_records_a_sealed_ack_or_bye_costs_the_timer_nothing(
    bed: Bed, tmp_path: Path
) -> None:
    """``dialog_record_ttl_ms = 0``: the in-dialog route relays each sealed ACK and BYE and
    queues nothing for the timer process; of each call only its 200 takes a slot."""
    with minimal(bed, tmp_path, COUNTERPOISE_DIALOG_RECORD_TTL_MS="0") as kamailio:
        a = bed.start_downstream("a")
        bed.add_pool((a, 1))

        result = bed.caller(calls=50, rate=25, hold_ms=100).wait(60)

        assert result.failed == 0, result.output[-2000:]
        count = a.counts()
        assert count["ack"] == count["invite"] == count["bye"] == 50, count
        ctl = processes.ctl_socket(kamailio.run_dir)
        processes.wait_for(
            lambda: answered_attempts(ctl) == 50, 5, "every call's outcome in the tallies"
        )
        assert int(htable(ctl, "cp")["dialog_event_seq"]) == 50
        assert "confirmed" not in testbed.counters(ctl, "cploc")
        assert records(bed) == {}


def htable(ctl: Path, table: str) -> dict[str, str]:
    """Every key and value of a running node's hash table (``htable.dump``)."""
    found: dict[str, str] = {}
    key = None
    for line in testbed.kamcmd(ctl, "htable.dump", table).splitlines():
        line = line.strip()
        if line.startswith("name:"):
            key = line.removeprefix("name:").strip()
        elif line.startswith("value:") and key is not None:
            found[key] = line.removeprefix("value:").strip()
    return found


def test_metrics_and_runtime_settings_in_a_native_config(bed: Bed, tmp_path: Path) -> None:
    """The node's Prometheus endpoint counts the calls the config routed through
    Counterpoise; settings pushed into its shared memory over the config's own RPC, as
    ``up`` pushes them on SIGHUP, are taken at runtime."""
    metrics_port = processes.free_port()
    operator = stock.Operator(
        files=(INCLUDE, DIALOG_ROUTES),
        defines={"CP_SCRIPT": str(NATIVE_SCRIPT)},
        env={
            "COUNTERPOISE_REDIS_URL": bed.redis_url,
            "COUNTERPOISE_NODE_ID": NODE,
            "COUNTERPOISE_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
        },
    )
    patch = PATCH_OF[stock.NATIVE.name].read_text()
    with stock.running(stock.NATIVE, tmp_path, patches=[patch], operator=operator) as native:
        bed.balancer_port = native.port
        a = bed.start_downstream("a")
        bed.add_pool((a, 1))

        result = bed.caller(calls=20, rate=20, hold_ms=100).wait(60)
        assert result.failed == 0, result.output[-2000:]

        url = f"http://127.0.0.1:{metrics_port}/metrics"
        processes.wait_for(
            lambda: (
                value(scrape(url), "counterpoise_requests_routed_total", node=NODE, reason="weight")
                == 20
            ),
            10,
            "20 calls in the metrics",
        )
        assert value(scrape(url), "counterpoise_route_seconds_count", node=NODE) == 20

        pushed = json.dumps(runtime_values(Settings.of(fr_timer_ms=800)))
        ctl = native.run_dir / "kamailio_ctl"
        testbed.kamcmd(ctl, "htable.sets", "cp", "settings", pushed)
        testbed.kamcmd(ctl, "htable.seti", "cp", "settings_version", "1")
        processes.wait_for(
            lambda: "settings changed at runtime" in native.log(), 5, "the settings taken"
        )
        assert "'fr_timer_ms': '800'" in native.log()
