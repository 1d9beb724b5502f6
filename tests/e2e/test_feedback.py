"""Feedback from the proxies themselves, end to end: agent reports, X-CP-Load in replies,
probes with no traffic, INVITE probes. Each test prints how long the balancer took to react
(the reaction times in docs/routing.md come from ``bash scripts/test.sh -s -k feedback``) and
asserts it within one and a half times the figure docs/routing.md quotes: noise passes, a
feedback loop slowed by doubling its time constants does not."""

from __future__ import annotations

import re
import signal
import time

import pytest
from harness import testbed

from counterpoise import processes
from tests.e2e.conftest import Bed, invite_counts, invite_shares

pytestmark = pytest.mark.e2e

PUBLISH_MS = 200
"""The balancer publishes its weights every tick, so a reaction is seen to the tick, not to
the default publishing second."""

# One and a half times the reaction times docs/routing.md quotes ("Reaction times"), so that
# noise passes and a feedback loop slowed by doubling its time constants (smoothing, blackout,
# expiry) fails.
AGENT_LOAD_BOUND_S = 3.2
"""Agents start, one reporting u = 0.9: its share below 20 % (quoted 2.0-2.1 s)."""
AGENT_GONE_BOUND_S = 4.6
"""That agent stops: its share back above 35 % (quoted 3.0-3.1 s, the report's expiry)."""
HEADER_LOAD_BOUND_S = 6.0
"""Replies start saying the proxy is full: its share below 20 % (quoted 4.0-4.4 s; 1.4 times
it, as the doubled loop took 6.6 s)."""
HEADER_GONE_BOUND_S = 3.4
"""Replies say the real load again: its share back above 35 % (quoted 1.8-2.3 s; the doubled
loop took 3.7 s)."""
# Probes are counted, not smoothed: twice their quoted figures.
PROBE_DOWN_BOUND_S = 10.0
"""No traffic, a proxy frozen: `down` (quoted 5.1 s)."""
PROBE_UP_BOUND_S = 2.0
"""No traffic, the proxy thawed: `up` (quoted 1.0 s)."""


def start_agent(bed: Bed, ds: testbed.Downstream, in_progress: int, capacity: int):
    """A real ``counterpoise-agent`` for ``ds`` whose source says ``in_progress`` transactions
    (a command source, so the test sets the load instead of creating it)."""
    source = ["--source", "command", "--command", f"echo {in_progress}"]
    proc = testbed.start_agent(ds, bed.redis_url, source, capacity)
    bed.adopt(proc)
    proc.ensure_started(
        lambda: bed.store.client.exists(bed.store.keys.report(ds.uri)),
        10,
        f"the agent of {ds.name} to publish",
    )
    return proc


def record(bed: Bed, uri: str) -> dict:
    return bed.rows_published()[uri]


def wait_share(bed: Bed, uri: str, condition, timeout_s: float, what: str) -> float:
    """Seconds until the weight share the balancer publishes for ``uri`` meets ``condition``."""
    start = time.monotonic()
    processes.wait_for(lambda: condition(bed.rows()[uri]["share"] or 0.0), timeout_s, what)
    return time.monotonic() - start


def calls_since(before: dict[str, int], pool: list[testbed.Downstream], calls: int) -> None:
    total = sum(before.values()) + calls
    processes.wait_for(lambda: sum(invite_counts(pool).values()) >= total, 30, f"{calls} calls")


def test_agent_reporting_high_load_loses_share_until_its_report_expires(bed: Bed) -> None:
    a, b = bed.start_downstream("a", workers=4), bed.start_downstream("b", workers=4)
    bed.start_balancer(publish_interval_ms=PUBLISH_MS)
    bed.add_pool((a, 1), (b, 1))
    bed.wait_state(b.uri, ("up",))
    start_agent(bed, a, in_progress=1, capacity=10)  # u = 0.1
    agent_b = start_agent(bed, b, in_progress=9, capacity=10)  # u = 0.9
    reacted = wait_share(bed, b.uri, lambda s: s < 0.2, AGENT_LOAD_BOUND_S, "b's share < 20 %")

    caller = bed.caller(calls=300, rate=30, hold_ms=100)
    before = invite_counts([a, b])
    processes.wait_for(
        lambda: sum(invite_counts([a, b]).values()) - sum(before.values()) >= 150, 30, "150 calls"
    )
    loaded_share = invite_shares([a, b], before)["b"]

    agent_b.stop()
    restored = wait_share(bed, b.uri, lambda s: s > 0.35, AGENT_GONE_BOUND_S, "b's share > 35 %")
    caller.stop()
    print(
        f"agent load: weight share below 20 % {reacted:.1f} s after the agents started "
        f"(blackout {bed.settings.load.load_blackout_ms} ms), calls to b {loaded_share:.1%}; "
        f"back above 35 % {restored:.1f} s after its agent stopped"
    )
    # headroom 0.1 vs 0.9: b's weight is 1/9 of a's, about 10 % of calls (P2C moves a little).
    assert loaded_share < 0.2


def test_proxy_whose_replies_carry_a_high_load_header_loses_share(bed: Bed) -> None:
    a, b = bed.start_downstream("a", workers=4), bed.start_downstream("b", workers=4)
    bed.start_balancer(publish_interval_ms=PUBLISH_MS)
    bed.add_pool((a, 1), (b, 1))
    bed.wait_state(b.uri, ("up",))
    caller = bed.caller(calls=600, rate=30, hold_ms=100)
    processes.wait_for(lambda: min(invite_counts([a, b]).values()) >= 20, 20, "both proxies in use")

    b.set_load_header("tx=8;workers=4;active=4")  # u = 1
    reacted = wait_share(bed, b.uri, lambda s: s < 0.2, HEADER_LOAD_BOUND_S, "b's share < 20 %")
    before = invite_counts([a, b])
    processes.wait_for(
        lambda: sum(invite_counts([a, b]).values()) - sum(before.values()) >= 120, 30, "120 calls"
    )
    share_b = invite_shares([a, b], before)["b"]

    b.set_load_header(None)
    restored = wait_share(bed, b.uri, lambda s: s > 0.35, HEADER_GONE_BOUND_S, "b's share > 35 %")
    caller.stop()
    print(
        f"X-CP-Load: weight share below 20 % {reacted:.1f} s after the header rose, calls to b "
        f"{share_b:.1%}; back above 35 % {restored:.1f} s after it fell"
    )
    assert share_b < 0.2


def test_real_load_header_says_how_busy_a_one_worker_proxy_is_over_time(bed: Bed) -> None:
    # One worker sleeping 50 ms per INVITE, 10 calls/s: busy half the time. Its own
    # transaction is active in every reply it relays, so active / workers would read 100 %.
    a = bed.start_downstream("a", workers=1)
    a.set_delay_ms(50)
    bed.start_balancer()
    bed.add_pool((a, 1))
    bed.wait_state(a.uri, ("up",))
    caller = bed.caller(calls=300, rate=10, hold_ms=100)

    def header_load() -> dict:
        return record(bed, a.uri)["load"].get("header", {})

    # The idle proxy's replies to probes said 0 % before the calls: the average starts there.
    processes.wait_for(
        lambda: header_load().get("counts") and header_load()["utilisation"] >= 0.4,
        30,
        "a's X-CP-Load average to reach 40 %",
    )
    readings = []
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        readings.append(header_load()["utilisation"])
        processes.wait_for(lambda: header_load()["utilisation"] != readings[-1], 5, "a new value")
    caller.stop()
    print(f"X-CP-Load of a one-worker proxy busy 50 %: {', '.join(map(str, readings))}")
    assert all(0.4 <= u <= 0.7 for u in readings), readings


def test_bad_load_headers_are_counted_and_change_no_weight(bed: Bed) -> None:
    a, b = bed.start_downstream("a"), bed.start_downstream("b")
    bed.start_balancer()
    bed.add_pool((a, 1), (b, 1))
    b.set_load_header("junk")  # probes bring replies every second, traffic or not
    node = bed.settings.node.node_name()
    processes.wait_for(
        lambda: int(bed.store.client.hget(bed.store.keys.rejects(node), "header") or 0) >= 3,
        15,
        "3 rejected headers counted in Redis",
    )
    rejects = bed.store.client.hgetall(bed.store.keys.rejects(node))
    assert rejects["header:last"].startswith(b.uri) and "junk" in rejects["header:last"]
    listing = bed.cli("proxy", "list")
    assert f"node {node} rejected: header" in listing.stdout, listing.stdout
    published = record(bed, b.uri)
    assert published["load_factor"] == 1.0 and published["utilisation"] is None
    # What b's replies said before the junk has expired; nothing since counts.
    assert published["load"].get("header", {}).get("counts", False) is False


def test_probes_mark_a_silent_proxy_down_and_back_with_no_traffic(bed: Bed) -> None:
    a, b = bed.start_downstream("a"), bed.start_downstream("b")
    bed.start_balancer()
    bed.add_pool((a, 1), (b, 1))
    bed.wait_state(b.uri, ("up",))

    b.proc.signal(signal.SIGSTOP)  # alive but silent: every probe times out
    stopped = time.monotonic()
    try:
        bed.wait_state(b.uri, ("down",), timeout_s=PROBE_DOWN_BOUND_S)
        down_after = time.monotonic() - stopped
    finally:
        b.proc.signal(signal.SIGCONT)
    resumed = time.monotonic()
    bed.wait_state(b.uri, ("slowstart", "up"), timeout_s=PROBE_UP_BOUND_S)
    back_after = time.monotonic() - resumed
    print(
        f"probes only: down {down_after:.1f} s after SIGSTOP, back {back_after:.1f} s after SIGCONT"
    )
    assert bed.rows()[a.uri]["state"] == "up"
    assert any(f"{b.uri} down:" in line for line in bed.log_lines())  # the journal has it


def test_invite_probes_leave_nothing_open(bed: Bed) -> None:
    ds = bed.start_downstream("a")
    uas_port = processes.free_port()
    uas = testbed.start_uas(uas_port, bed.run_dir / "answering")
    bed.adopt(uas)
    answering = f"sip:127.0.0.1:{uas_port}"  # answers INVITE probes 200: needs ACK and BYE
    bed.start_balancer(probe_method="INVITE")
    bed.store.add(ds.uri)
    bed.store.add(answering)
    processes.wait_for(
        lambda: all(
            (bed.rows_published().get(uri, {}).get("totals", {}).get("probes_ok", 0)) >= 3
            for uri in (ds.uri, answering)
        ),
        20,
        "3 answered INVITE probes of each",
    )
    bed.store.remove(answering)
    bed.store.remove(ds.uri)
    # The downstream answered every probe itself: nothing relayed, nothing left in progress.
    processes.wait_for(lambda: _in_progress(ds) == 0, 10, "no transaction in progress on a")
    counts = ds.counts()
    assert counts["invite"] >= 3 and counts["ack"] == counts["invite"], counts
    # The UAS answered 200: each probe dialog got its ACK (from tm) and BYE (from us).
    uas.stop()
    screen = (bed.run_dir / "answering" / f"uas-{uas_port}.log").read_text()
    acks, byes = _last_count(screen, "ACK"), _last_count(screen, "BYE")
    assert acks >= 3 and byes == acks, screen[-1500:]


def _in_progress(ds: testbed.Downstream) -> int:
    stats = dict(re.findall(r"(\w+): (\d+)", testbed.kamcmd(ds.ctl, "tm.stats")))
    return int(stats["current"]) - int(stats["waiting"])


def _last_count(screen: str, method: str) -> int:
    """Messages of ``method`` received, from the last SIPp scenario screen in a log."""
    found = re.findall(rf"----------> {method}\s+(?:E-RTD\d\s+)?(\d+)", screen)
    return int(found[-1]) if found else 0
