"""One upstream's real calls at 1000 calls/s (an SBC, a trunk: 3000 requests/s from one
address) against the flood guard: trusted, every call is answered as with the limits off;
untrusted under a lower limit, only the excess is refused (503) and nothing is banned."""

from __future__ import annotations

import time

import pytest
from harness import testbed

from counterpoise import processes
from tests.e2e.conftest import Bed
from tests.e2e.test_security import good_call_succeeds

pytestmark = pytest.mark.e2e

RATE_PER_S = 1000
SECONDS = 6
WINDOW_S = 1.0
"""The flood limits' window (``kamailio.flood.WINDOW_MS``)."""
FLOOD_REFUSAL = "503 Over Rate Limit"
"""What the flood limit answers a request past it (``kamailio.flood``)."""
CALLS = RATE_PER_S * SECONDS
LIMIT_PER_S = 1500
"""Half of what the upstream sends: INVITE, ACK and BYE of 1000 calls/s."""
TRUSTED, UNTRUSTED, OPEN = "127.0.0.5", "127.0.0.6", "127.0.0.7"
FLOOD_COUNTERS = {"shed", "dropped_flood", "banned", "dropped_banned"}
"""The edge's counts of requests the flood guard refused (a busy machine adds others, such as
the callee's late retransmissions counted as ``stray_forwarded``)."""


def full_rate(bed: Bed, source: str) -> testbed.Caller:
    """The upstream: ``CALLS`` calls at ``RATE_PER_S``, answered at once, hung up at once."""
    return bed.caller(calls=CALLS, rate=RATE_PER_S, hold_ms=0, local_ip=source)


def pool(bed: Bed) -> list[str]:
    """Downstream capacity for the whole rate: two SIPp UAS in the pool, answering the calls
    and the probes themselves (a proxy in between would double the work on this machine)."""
    callees = [bed.start_uas(), bed.start_uas()]
    for uri in callees:
        bed.store.add(uri, 1.0)
    for uri in callees:
        bed.wait_state(uri, ("up",), 30)
    return callees


def all_up(bed: Bed, uris: list[str]) -> bool:
    """Whether the last balancer started sees every one of ``uris`` up."""
    published = bed.rows_published()
    return all(published.get(uri, {}).get("state") == "up" for uri in uris)


def test_one_upstream_at_1000_calls_per_s_trusted_or_shed_never_banned(bed: Bed) -> None:
    balancer = {"workers": 4, "location_server": False}
    bed.start_balancer(name="open", flood_requests_per_s=0, flood_registers_per_s=0, **balancer)
    callees = pool(bed)
    baseline = full_rate(bed, OPEN).wait(120)
    # Enough for the comparisons below: more calls than the limit lets through.
    assert baseline.successful > LIMIT_PER_S // 3 * SECONDS, baseline.output[-2000:]

    bed.start_balancer(
        name="guarded",
        flood_requests_per_s=LIMIT_PER_S,
        trusted_upstreams=f"192.0.2.0/24,{TRUSTED},2001:db8::/32",
        **balancer,
    )
    processes.wait_for(lambda: all_up(bed, callees), 30, "the new node to see its pool up")
    trusted = full_rate(bed, TRUSTED)
    answered = trusted.wait(120)
    # As with the limits off: every call the machine carries is answered, none refused.
    assert answered.successful >= baseline.successful - CALLS // 100, answered.output[-2000:]
    # Never the flood limit's 503; a full pool's (core.admission) counts among the calls
    # the machine did not carry, as with the limits off.
    assert FLOOD_REFUSAL not in trusted.error_statuses()
    assert not FLOOD_COUNTERS & bed.counters("cpedge", "guarded").keys()

    untrusted = full_rate(bed, UNTRUSTED)
    shed = untrusted.wait(120)
    counters = bed.counters("cpedge", "guarded")
    refused = untrusted.error_codes()
    print(
        f"answered with limits off {baseline.successful}, trusted {answered.successful},"
        f" untrusted {shed.successful} (503: {refused}); edge {counters}"
    )
    # Only the excess is lost: each call the machine carries with the limits off is answered
    # or refused with 503, at its INVITE.
    assert counters["shed"] > 0 and abs(refused.get(503, 0) - counters["shed"]) <= CALLS // 100
    assert shed.successful + counters["shed"] >= baseline.successful - CALLS // 100
    # Each window admits its limit, at least: a third of it in whole calls.
    assert shed.successful >= min(baseline.successful, LIMIT_PER_S // 3 * SECONDS) * 0.9
    assert "banned" not in counters and "dropped_banned" not in counters
    # Its last calls' INVITEs may share a window with the good call's: the next one starts
    # at most a window from now, and is admitted as before.
    time.sleep(WINDOW_S)
    good_call_succeeds(bed, UNTRUSTED)
