"""Highest sustained rate and CPU per call: the offered load raised step by step on one
balancer until a step fails (the capacity sweep, on the pool; the overhead bench, on a
fast UAS alone), and the cost of one selection decision."""

from __future__ import annotations

import random
import timeit
from collections.abc import Callable, Sequence
from pathlib import Path

from bench import drive
from bench.contenders import Contender
from bench.metrics import latency_summary
from bench.pool import Target
from counterpoise.core.selection import WeightedPicker

SUSTAINED_P99_MS = 1500.0
"""A step is sustained when no call failed and its p99 INVITE-to-200 stayed within 1.5 s,
the failover timer (``fr_timer_ms``): a slower answer means requests are already
being given up on and retried."""

PICK_POOL_SIZES = (10, 100, 1000)
PICK_CALLS = 20_000
"""Decisions timed per repetition: long enough (tens of ms) that the timer's resolution
does not matter."""
PICK_REPEATS = 5
"""The best of 5 repetitions is reported: the others include other processes' noise."""


def ramp(
    contender: Contender,
    targets: Sequence[Target],
    probed: Callable[[], bool] | None,
    run_dir: Path,
    redis_url: str,
    loads: Sequence[drive.Load],
    step_s: float,
    say: Callable[[str], None] = print,
    tries: int = 1,
) -> dict:
    """Offer each load in turn for ``step_s`` to one balancer, waiting for every call of a
    step to end before the next, and stop after the first step not sustained in ``tries``
    tries (more than one when other work shares the machine: a burst of it fails a step
    the balancer sustains)."""
    running = contender.start(targets, run_dir, redis_url, probed)
    steps = []
    try:
        for load, attempt in ((load, n) for load in loads for n in range(tries)):
            if attempt and steps[-1]["sustained"]:
                continue
            rate = load.rate
            m = drive.measure(
                running, None, None, run_dir / f"rate-{rate:g}-{attempt}", load, step_s
            )
            p99 = latency_summary([rtt for _, rtt in m.sipp.answered])["p99"]
            sustained = m.sipp.failed == 0 and p99 is not None and p99 <= SUSTAINED_P99_MS
            steps.append(
                {
                    "rate": rate,
                    "attempted": m.sipp.attempted,
                    "failed": m.sipp.failed,
                    "p99_ms": p99,
                    "cpu_s": m.cpu_s,
                    "store_cpu_s": m.store_cpu_s,
                    "cpu_ms_per_call": 1000 * m.cpu_s / max(1, m.sipp.attempted),
                    "machine_busy": m.machine_busy,
                    "sustained": sustained,
                }
            )
            p99_text = f"{p99:.0f} ms" if p99 is not None else "-"
            say(
                f"      {rate:6.1f} calls/s: {m.sipp.failed} failed, p99 {p99_text}, "
                f"balancer CPU {1000 * m.cpu_s / max(1, m.sipp.attempted):.2f} ms/call"
                f"{'' if sustained else '  <- not sustained'}"
            )
            if not sustained and attempt == tries - 1:
                break
    finally:
        running.stop()
    sustained_rates = [step["rate"] for step in steps if step["sustained"]]
    return {
        "contender": contender.name,
        "steps": steps,
        "highest_sustained": max(sustained_rates, default=0.0),
    }


def pick_micro() -> dict[int, float]:
    """Microseconds per ``WeightedPicker.pick`` decision, per pool size."""
    results = {}
    for size in PICK_POOL_SIZES:
        rng = random.Random(size)
        uris = [f"sip:10.0.{i // 250}.{i % 250}:5060" for i in range(size)]
        picker = WeightedPicker([(uri, rng.uniform(0.5, 2.0)) for uri in uris])
        inflight = {uri: rng.randrange(6) for uri in uris}
        draw = random.Random(1).random
        timer = timeit.Timer(lambda p=picker, r=draw, f=inflight.__getitem__: p.pick(r, r, f))
        best = min(timer.repeat(PICK_REPEATS, PICK_CALLS))
        results[size] = best / PICK_CALLS * 1e6
    return results
