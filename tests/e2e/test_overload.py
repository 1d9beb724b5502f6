"""Overload is not death, end to end (issue 14): a proxy whose requests time out because it
is saturated, while it still answers, stays in the pool; a frozen one is set aside at once,
without being marked down for its silence alone."""

from __future__ import annotations

import signal
import time

import pytest

from counterpoise import processes
from tests.e2e.conftest import Bed

pytestmark = pytest.mark.e2e

DOMAIN = "127.0.0.1"
"""SIPp's calls go to ``service@127.0.0.1``: a domain pin on it sends every call to one
proxy first, whatever its weight, so that proxy can be overloaded on purpose."""


def test_a_saturated_proxy_that_times_out_requests_is_not_marked_down(bed: Bed) -> None:
    a = bed.start_downstream("a", workers=4)
    b = bed.start_downstream("b", workers=1)
    bed.start_balancer(fr_timer_ms=800)
    bed.add_pool((a, 1), (b, 1))
    assert bed.cli("location", "pin", DOMAIN, b.uri).returncode == 0
    # b: one worker, 400 ms per INVITE: 2.5 calls/s. Offered 6 calls/s, its queue passes the
    # 800 ms failover timer within a second, so its requests time out at the balancer and
    # fail over to a, while b goes on answering (late) the ones it queued.
    b.set_delay_ms(400)
    caller = bed.caller(calls=60, rate=6, hold_ms=100)
    result = caller.wait(60)

    record = processes.wait_for(
        lambda: (r := bed.rows_published().get(b.uri)) and r["totals"]["late_replies"] and r,
        5,
        "b's late replies to be published",
    )
    totals = record["totals"]
    print(f"b: {totals['requests_failed']} timed out, {totals['late_replies']} late replies")
    # The sync loop logs every state change the tick it happens, so a `down` of one tick
    # (200 ms), which sampling the published state would miss, is in the log.
    downs = [line for line in bed.log_lines() if f"{b.uri} down:" in line]
    print(f"b marked down {len(downs)} times; calls failed: {result.failed} of 60")
    assert totals["requests_failed"] >= 3  # it did time out, more than a down streak's worth
    assert downs == []
    assert record["state"] != "down"


def test_a_frozen_proxy_is_set_aside_at_once_and_not_marked_down_for_it(bed: Bed) -> None:
    a, b = bed.start_downstream("a", workers=4), bed.start_downstream("b", workers=4)
    # Weights published every 200 ms, so the short time between b's silence and its
    # failure streak (from fr_timer_ms on) is seen.
    bed.start_balancer(publish_interval_ms=200)
    bed.add_pool((a, 1), (b, 1))
    caller = bed.caller(calls=160, rate=20, hold_ms=100)
    processes.wait_for(lambda: b.counts().get("invite", 0) >= 10, 15, "b to take calls")
    b.proc.signal(signal.SIGSTOP)  # frozen: no reply, no probe answer
    stopped = time.monotonic()
    try:
        record = processes.wait_for(
            lambda: (r := bed.rows_published().get(b.uri)) and r["silent"] and r,
            5,
            "b to be set aside for its silence",
        )
        seen_after = time.monotonic() - stopped
    finally:
        b.proc.signal(signal.SIGCONT)
    print(f"b set aside {seen_after:.2f} s after SIGSTOP: {record['silence_ms']} ms silent, "
          f"{record['consecutive_failures']} failures in a row")  # fmt: skip
    assert record["weight"] == 0 and record["share"] == 0
    assert record["state"] in ("up", "slowstart")  # set aside, not ejected
    assert record["silence_ms"] >= bed.settings.health.silent_after_ms
    # Its first replies after SIGCONT give it its weight back.
    processes.wait_for(
        lambda: (r := bed.rows_published().get(b.uri)) and not r["silent"] and r["weight"] > 0,
        10,
        "b back in the pool after SIGCONT",
    )
    result = caller.wait(60)
    assert result.failed == 0, result.output[-2000:]


RINGING_FAILURES_MAX = 9
"""Calls of 90 that may fail with the callee ringing (10 %): none in eleven runs of this test
alone, beside CPU hogs too, but 5 once in a whole slow lane, whose codes went unrecorded (the
assertion now prints them). Under the 10-18 of the callee that aborted calls on a
retransmitted INVITE and the 46 of holding that counted ringing."""


@pytest.mark.parametrize("ring_ms", [0, 2000])
def test_calls_beyond_the_pools_capacity_wait_at_the_balancer_and_are_all_answered(
    bed: Bed, ring_ms: int
) -> None:
    """With the callee's phone ringing 2 s too: a ringing call is no longer the proxy's work,
    so it leaves room for held calls. Counting it, every held call left only at its
    hold_max_ms (67 of 67 in one run) and 46 of 90 calls got the test proxies' 408."""
    bed.start_uas(ring_ms=ring_ms)
    a, b = bed.start_downstream("a", workers=1), bed.start_downstream("b", workers=1)
    bed.start_balancer()  # holding alone (the default): tests/e2e/test_shedding.py sheds
    bed.add_pool((a, 1), (b, 1))
    # One worker each, 200 ms per INVITE: 10 calls/s for the pool. Offered 15 calls/s for
    # 6 s, both proxies queue past hold_queue_ms and the calls beyond their limits are
    # held at the balancer (a backlog of about 30 calls, drained in order).
    a.set_delay_ms(200)
    b.set_delay_ms(200)
    caller = bed.caller(calls=90, rate=15, hold_ms=100)
    result = caller.wait(90)
    held = bed.counters("cpstat")
    print(f"held {held.get('held', 0)}, overdue {held.get('held_overdue', 0)}; "
          f"failed {result.failed} of 90, error replies {caller.error_codes()}")  # fmt: skip
    assert held.get("held", 0) > 0
    # Released as the proxies free up (the backlog drains in about 3 s), not at their
    # deadline (hold_max_ms, 4 s).
    assert held.get("held_overdue", 0) <= held["held"] // 4
    # Held calls were relayed with their Record-Route: every one completed, BYE included.
    # Ringing, a few may still get a test proxy's own 408 (docs/routing.md, "Holding at the
    # balancer"); counting ringing calls as work cost 46.
    assert result.failed <= (RINGING_FAILURES_MAX if ring_ms else 0), (
        caller.error_codes(),
        result.output[-2000:],
    )
