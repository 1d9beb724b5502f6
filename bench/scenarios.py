"""The scenarios (steady, step, stall, kill, and issue 14's bigstall, bigkill, load85,
load95; load110 and load150, past capacity; and issue 29's multi-node ones), each the same
for every contender (the multi-node ones for Counterpoise only), and what a run of one
contender through one scenario yields."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

from bench import drive
from bench.contenders import Contender
from bench.metrics import increments, latency_summary, percentile, windowed_shares
from bench.pool import BASE_DELAY_MS, Pool

STEP_PROXY = "medium"
STEP_FACTOR = 4
"""In the step scenario the medium proxy becomes 4 times slower (100 -> 400 ms per INVITE:
20 -> 5 calls/s). The pool then still has 55 calls/s for the 49 offered, so answering every
call stays possible, but only if the balancer moves load away from it."""

STALL_PROXY = "medium"
"""The stalled proxy: without it the pool has 50 calls/s for the 49 offered."""

KILL_PROXY = "small"
"""The killed proxy: without it the pool has 60 calls/s for the 49 offered."""

BIG_PROXY = "big"
"""The proxy holding more than half of the capacity (40 of 70 calls/s): without it the pool
has 30 calls/s for the 49 offered, so no balancer can answer every call within its usual
time while it is gone (issue 14)."""

HIGH_LOADS = (0.85, 0.95)
"""Offered loads, as fractions of the pool's capacity, of the scenarios in which nothing
fails (issue 14): near capacity, queues form by chance alone."""

OVERLOADS = (1.1, 1.5)
"""Offered loads past the pool's capacity: the excess cannot be answered, and what counts
is the calls answered, how long they waited, and how fast the rest heard no."""

OVERLOAD = OVERLOADS[0]
"""The overload compared between one node and several (issue 29)."""

MULTI_NODE_LOADS = (0.7, 0.95, OVERLOAD)
NODE_COUNTS = (2, 3)
"""Several Counterpoise nodes on one Redis, each called by its own caller with an equal part
of the same total load as the single-node scenario of that load (issue 29)."""

SINGLE_NODE_TWIN = {0.7: "steady", 0.95: "load95", OVERLOAD: "load110"}
"""The single-node scenario each multi-node load is compared with."""

RECOVERY_FACTOR = 2.0
"""After a disturbance, p99 counts as recovered once every later second of call starts has
its p99 within 2x the p99 of the calls answered before the event (issue 14's target)."""

ANSWERED_PER_BIN = 0.95
"""... and at least 95 % of that second's offered calls answered (about 2 of 49 missing is
the rounding of SIPp's pacing, not failures)."""

SHARE_WINDOW_S = 1.0
"""Width of the windows the share over time is computed on (about 49 INVITEs each)."""

SHIFT_SLACK = 0.05
"""The slow proxy's share has "fallen to its capacity share" when a whole window after the
event shows at most that share plus 5 points: one binomial standard deviation of a window
of 49 INVITEs at a share of 10 % is 4 points, so a balancer sitting exactly at the capacity
share is not reported late by noise."""


@dataclasses.dataclass(frozen=True)
class Timing:
    """Durations in seconds; the modes (full, quick, smoke) differ only in these."""

    steady_s: float
    lead_s: float
    """Undisturbed load before the event."""
    slow_s: float
    """How long the step proxy stays slow."""
    stall_s: float
    dead_s: float
    """How long the killed proxy stays dead before it restarts."""
    tail_s: float
    """Load after the recovery."""
    big_stall_s: float
    """How long the biggest proxy stays frozen (bigstall)."""
    big_dead_s: float
    """How long the biggest proxy stays dead before it restarts (bigkill)."""
    warmup_s: float
    """Load on the freshly started balancer before each measured run, the same for every
    contender and not in the run's figures (reported apart): a balancer serves traffic
    for days, so what it learned in its first seconds belongs to the steady state, and a
    cold start is not what the scenarios compare."""


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    duration_s: float
    events: tuple[drive.Event, ...] = ()
    event_proxy: str | None = None
    window: tuple[float, float] | None = None
    """(start, end) of the disturbance, seconds after the first call."""
    capacity_during: Callable[[dict[str, float]], dict[str, float]] | None = None
    """The proxies' capacities during the disturbance, from the normal ones."""
    load: float | None = None
    """Offered load as a fraction of the pool's capacity; None: the bench's (70 %)."""
    nodes: int = 1
    """Balancer nodes sharing the pool, each with its own caller (Counterpoise only)."""
    twin: str | None = None
    """The single-node scenario a multi-node one is compared with."""


Action = tuple[str, Callable[[Pool], None]]
"""What an event does, in words for the progress output, and to the pool."""


def disturbance(
    name: str,
    description: str,
    proxy: str,
    timing: Timing,
    length_s: float,
    begin: Action,
    end: Action,
    capacity_during: Callable[[dict[str, float]], dict[str, float]],
) -> Scenario:
    """A scenario in which something happens to ``proxy`` after the lead time and is undone
    ``length_s`` later, followed by the tail."""
    start, stop = timing.lead_s, timing.lead_s + length_s
    return Scenario(
        name,
        description,
        stop + timing.tail_s,
        (
            drive.Event(start, f"{proxy}: {begin[0]}", begin[1]),
            drive.Event(stop, f"{proxy}: {end[0]}", end[1]),
        ),
        proxy,
        (start, stop),
        capacity_during,
    )


def without(name: str) -> Callable[[dict[str, float]], dict[str, float]]:
    """The capacities while ``name`` is gone."""
    return lambda caps: {**caps, name: 0.0}


def stalled(name: str, proxy: str, timing: Timing, length_s: float) -> Scenario:
    """``proxy`` frozen (SIGSTOP) for ``length_s``, then continued (SIGCONT)."""
    return disturbance(
        name,
        f"at {timing.lead_s:g} s the {proxy} proxy is frozen (SIGSTOP) for {length_s:g} s, "
        "then continues (SIGCONT)",
        proxy,
        timing,
        length_s,
        ("SIGSTOP", lambda p: p.stall(proxy)),
        ("SIGCONT", lambda p: p.resume(proxy)),
        without(proxy),
    )


def killed(name: str, proxy: str, timing: Timing, length_s: float) -> Scenario:
    """``proxy`` killed (SIGKILL), restarted on its port ``length_s`` later."""
    return disturbance(
        name,
        f"at {timing.lead_s:g} s the {proxy} proxy is killed (SIGKILL), restarted on the "
        f"same port {length_s:g} s later",
        proxy,
        timing,
        length_s,
        ("SIGKILL", lambda p: p.kill(proxy)),
        ("restarted", lambda p: p.restart(proxy)),
        without(proxy),
    )


def multi_node(scenario: Scenario, nodes: int, twin: str) -> Scenario:
    """``scenario`` through ``nodes`` nodes on one Redis, each called at an equal part of the
    load, compared with the single-node ``twin``."""
    description = (
        f"{nodes} nodes on one Redis, each called at 1/{nodes} of the load; " + scenario.description
    )
    return dataclasses.replace(scenario, description=description, nodes=nodes, twin=twin)


def build(timing: Timing) -> dict[str, Scenario]:
    lead = timing.lead_s
    slow_ms = BASE_DELAY_MS * STEP_FACTOR

    def slowed(caps: dict[str, float]) -> dict[str, float]:
        return {**caps, STEP_PROXY: caps[STEP_PROXY] / STEP_FACTOR}

    scenarios = [
        Scenario("steady", "nothing changes", timing.steady_s),
        disturbance(
            "step",
            f"at {lead:g} s the {STEP_PROXY} proxy becomes {STEP_FACTOR}x slower "
            f"({BASE_DELAY_MS} -> {slow_ms} ms per INVITE), recovers "
            f"{timing.slow_s:g} s later",
            STEP_PROXY,
            timing,
            timing.slow_s,
            (f"{slow_ms} ms per INVITE", lambda p: p.set_delay(STEP_PROXY, slow_ms)),
            (f"back to {BASE_DELAY_MS} ms", lambda p: p.set_delay(STEP_PROXY, BASE_DELAY_MS)),
            slowed,
        ),
        stalled("stall", STALL_PROXY, timing, timing.stall_s),
        killed("kill", KILL_PROXY, timing, timing.dead_s),
        stalled("bigstall", BIG_PROXY, timing, timing.big_stall_s),
        killed("bigkill", BIG_PROXY, timing, timing.big_dead_s),
        *(
            Scenario(
                f"load{round(100 * load)}",
                f"nothing changes, offered load {load:.0%} of the pool's capacity",
                timing.steady_s,
                load=load,
            )
            for load in HIGH_LOADS
        ),
        *(
            Scenario(
                f"load{round(100 * load)}",
                f"nothing changes, offered load {load:.0%} of the pool's capacity: the excess"
                " cannot be answered",
                timing.steady_s,
                load=load,
            )
            for load in OVERLOADS
        ),
        *(
            multi_node(
                Scenario(
                    f"load{round(100 * load)}x{nodes}",
                    f"nothing changes, offered load {load:.0%} of the pool's capacity",
                    timing.steady_s,
                    load=load,
                ),
                nodes,
                SINGLE_NODE_TWIN[load],
            )
            for nodes in NODE_COUNTS
            for load in MULTI_NODE_LOADS
        ),
        multi_node(stalled("bigstallx2", BIG_PROXY, timing, timing.big_stall_s), 2, "bigstall"),
    ]
    return {scenario.name: scenario for scenario in scenarios}


def run(
    contender: Contender,
    scenario: Scenario,
    pool: Pool,
    run_dir: Path,
    redis_url: str,
    load: drive.Load,
    counter: drive.Counter,
    warmup_s: float,
    say: Callable[[str], None] = print,
) -> dict:
    """One contender through one scenario, on a freshly started balancer (warmed up with
    ``warmup_s`` of the same load) and a pool reset to its base state; returns the figures
    of the report (JSON-serialisable)."""
    pool.reset()
    probed = pool.probe_watch()
    running = contender.start_nodes(scenario.nodes, pool.targets(), run_dir, redis_url, probed)
    try:
        warmup = drive.measure(running, None, None, run_dir / "warmup", load, warmup_s)
        m = drive.measure(
            running, pool, counter, run_dir, load, scenario.duration_s, scenario.events, say
        )
    finally:
        running.stop()
    result = summarise(contender, scenario, pool, m)
    result["warmup"] = {
        "duration_s": warmup_s,
        "attempted": warmup.sipp.attempted,
        "failed": warmup.sipp.failed,
        "latency_ms": latency_summary([rtt for _, rtt in warmup.sipp.answered]),
    }
    return result


def summarise(contender: Contender, scenario: Scenario, pool: Pool, m: drive.Measurement) -> dict:
    rtts = [rtt for _, rtt in m.sipp.answered]
    samples = [(s.t, s.invites) for s in m.samples]
    result = {
        "contender": contender.name,
        "scenario": scenario.name,
        "nodes": scenario.nodes,
        "twin": scenario.twin,
        "rate": m.rate,
        "duration_s": m.duration_s,
        "attempted": m.sipp.attempted,
        "answered": len(rtts),
        "successful": m.sipp.successful,
        "failed": m.sipp.failed,
        "retransmissions": m.sipp.retransmissions,
        "latency_ms": latency_summary(rtts),
        "cpu_s": m.cpu_s,
        "store_cpu_s": m.store_cpu_s,
        "cpu_s_per_1000": 1000 * m.cpu_s / m.sipp.attempted if m.sipp.attempted else None,
        "machine_busy": m.machine_busy,
        "calls": [(round(start - m.origin_epoch, 3), rtt) for start, rtt in m.sipp.answered],
        "rejected": len(m.rejections),
        "rejected_ms": latency_summary([r.after_ms for r in m.rejections]),
        "failures": [(round(t - m.origin_epoch, 3), n) for t, n in m.sipp.failures if n],
        "shares": [(t, s) for t, s in windowed_shares(samples, SHARE_WINDOW_S)],
        "share_before": None,
        "share_during": None,
        "share_after": None,
        "event_proxy": scenario.event_proxy,
        "window": scenario.window,
        "capacity_share_during": None,
        "shift_s": None,
        "recovery_s": None,
    }
    if scenario.window is None:
        result["share_before"] = shares_between(samples, 0, m.duration_s)
        return result
    start, end = scenario.window
    result["share_before"] = shares_between(samples, 0, start)
    result["share_during"] = shares_between(samples, start, end)
    result["share_after"] = shares_between(samples, end, m.duration_s)
    if scenario.capacity_during and scenario.event_proxy:
        during = scenario.capacity_during(pool.capacities)
        target = during[scenario.event_proxy] / sum(during.values())
        result["capacity_share_during"] = target
        result["shift_s"] = shift_time(
            result["shares"], scenario.event_proxy, start, end, target + SHIFT_SLACK
        )
    result["recovery_s"] = recovery_time(result["calls"], start, end, m.duration_s, m.rate)
    return result


def shares_between(
    samples: list[tuple[float, dict[str, int | None]]], start: float, end: float
) -> dict[str, float]:
    inside = [(t, counts) for t, counts in samples if start - 1e-9 <= t <= end + 1e-9]
    delta = increments(inside)
    total = sum(delta.values())
    return {name: count / total for name, count in delta.items()} if total else {}


def shift_time(
    shares: list[tuple[float, dict[str, float]]],
    proxy: str,
    start: float,
    end: float,
    threshold: float,
) -> float | None:
    """Seconds from ``start`` to the end of the first whole window after it in which the
    proxy's share was at most ``threshold``; None if that never happened before ``end``."""
    for t, share in shares:
        whole_window_inside = t - SHARE_WINDOW_S >= start - 1e-9 and t <= end + 1e-9
        if whole_window_inside and share.get(proxy, 0.0) <= threshold:
            return t - start
    return None


def recovery_time(
    calls: list[tuple[float, float]], start: float, end: float, duration_s: float, rate: float
) -> float | None:
    """Seconds from ``end`` (the disturbed proxy's return) to the start of the first 1 s bin
    of call starts from which every whole bin has its p99 within ``RECOVERY_FACTOR`` times
    the p99 of the calls answered before ``start`` (the steady value: calls still waiting at
    ``start`` are the event's), with at least ``ANSWERED_PER_BIN`` of the
    offered calls answered (an unanswered call's start time is not known, so a bin short of
    its calls counts as not recovered); None when no such bin came before the run ended."""
    before = [rtt for t, rtt in calls if t + rtt / 1000 < start]
    if not before:
        return None
    limit = RECOVERY_FACTOR * percentile(before, 0.99)
    starts: dict[int, list[float]] = {}
    for t, rtt in calls:
        starts.setdefault(int(t), []).append(rtt)
    first = math.ceil(end - 1e-9)
    good = []
    for second in range(first, int(duration_s)):
        rtts = starts.get(second, [])
        enough = len(rtts) >= ANSWERED_PER_BIN * rate
        good.append(enough and percentile(rtts, 0.99) <= limit)
    for index in range(len(good)):
        if all(good[index:]):
            return first + index - end
    return None
