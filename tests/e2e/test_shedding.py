"""Shedding past the pool's capacity, end to end: the excess gets a fast 503 with
Retry-After, the calls admitted complete, and under capacity nothing is shed."""

from __future__ import annotations

import pytest
from harness import sipp_messages

from tests.e2e.conftest import Bed

pytestmark = pytest.mark.e2e

SHED_REPLY_MAX_MS = 100
"""The issue's bound: the excess hears its 503 within 100 ms of arriving."""


def test_past_capacity_the_excess_gets_a_fast_503_and_the_admitted_calls_complete(
    bed: Bed,
) -> None:
    a, b = bed.start_downstream("a", workers=1), bed.start_downstream("b", workers=1)
    bed.start_balancer(shed_hold_ms=100)  # off by default
    bed.add_pool((a, 1), (b, 1))
    # One worker each, 200 ms per INVITE: 10 calls/s for the pool.
    a.set_delay_ms(200)
    b.set_delay_ms(200)
    # Under capacity (60 %): nothing is shed.
    calm = bed.caller(calls=24, rate=6, hold_ms=100).wait(60)
    assert calm.failed == 0, calm.output[-2000:]
    assert bed.counters("cpstat").get("shed", 0) == 0
    # Twice the capacity for 8 s: the proxies queue to their limits, a short backlog is
    # held, and the rest is shed.
    caller = bed.caller(calls=160, rate=20, hold_ms=100, extra=sipp_messages.TRACE_ARGS)
    result = caller.wait(120)
    counters = bed.counters("cpstat")
    shed = sipp_messages.rejections(sipp_messages.trace_file(caller))
    late = [r for r in shed if r.after_ms > SHED_REPLY_MAX_MS]
    print(f"shed {counters.get('shed', 0)}, held {counters.get('held', 0)}; failed "
          f"{result.failed} of 160; 503 after (ms) max "
          f"{max((r.after_ms for r in shed), default=0):.0f}")  # fmt: skip
    assert counters.get("shed", 0) >= 20  # about half of 160 is past capacity
    assert len(shed) == counters["shed"]
    assert all(r.status == 503 and r.retry_after == 1 for r in shed)
    assert late == []
    # Every call not shed was answered and completed, BYE included.
    assert result.failed == len(shed), result.output[-2000:]
    assert result.successful == 160 - len(shed)
