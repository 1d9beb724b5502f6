"""The overhead bench (issue 15): CPU per call of one balancer relaying to one downstream
(the SIPp UAS: INVITE with a user in the R-URI, 200, ACK, BYE, 200) at the rates people
run, every process the balancer needs counted (Kamailio and, for Counterpoise, its Redis),
against the same relay in plain Kamailio with dispatcher alg 4 on the same machine.

Rounds alternate the contenders (the order rotates each round) so slow changes of the
machine's other load spread over all of them; each round starts each contender fresh,
measures it idle (its fixed cost per second), then at each rate. The report gives medians
over rounds: of the CPU per call, and of each round's own ratio to alg 4
(``median_ratio``). Then the saturation run: each contender offered more calls than the
host can take (``SATURATION_RATE``), in alternating rounds, its answered calls per second
counted; then the sustained rate: Counterpoise and alg 4 ramped until a step fails.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from bench import capacity, cpu_quota, drive
from bench.contenders import BY_NAME, Contender, Running
from bench.pool import Target

RATES = (100, 300, 1000)
"""Calls/s: most deployments run tens to a few hundred per node (issue 15)."""
CONTENDERS = ("ds4", "kemi4", "py1", "py2", "counterpoise", "cp-noloc", "cp-metrics")
"""Native alg 4 (the reference), the minimal Python KEMI relay (every message in Python),
the native relay that enters Python once or twice a call (the floor of a design that decides
in Python), Counterpoise with and without its location server, and with its metrics
endpoint on (the others have it off, the default)."""
REFERENCE = "ds4"
ROUNDS = 3
STEP_S = 8.0
"""Seconds of calls per rate: 800 to 8000 calls, enough that a 10 ms clock tick of /proc
CPU times is under 1 % of a step's CPU."""
IDLE_S = 4.0
"""Seconds measured with no calls: the fixed cost per second (timers, probes, Redis)."""
HOLD_MS = 1000
"""How long each call stays up after its 200: long enough that the BYE is a separate
moment, short enough that every step ends soon after its last call."""
WARMUP_S = 1.5
"""Calls at 100/s after each start, not measured: a user sizing a host runs a warm
balancer (its workers' first Redis connections, first allocations)."""
BAD_STEP_FAILED = 0.01
"""A step in which more than 1 % of calls failed (the machine's other work starved SIPp or
the balancer) is left out of the medians: its CPU is not that of the calls asked for."""
SUSTAINED_RATES = (600, 1000, 1500, 2000, 2500, 3000)
SUSTAINED_STEP_S = 4.0
SUSTAINED_TRIES = 2
"""A rate counts as sustained if one of two tries passes: other helpers' tests share the
two cores and one burst of theirs fails a step."""
SUSTAINED_CONTENDERS = ("counterpoise", "ds4")
SATURATION_RATE = 1500
"""Calls/s offered in the saturation run: past what ``SATURATION_CPUS`` sustain for any of
the balancers, and within what the rest of the cores sustain for SIPp's caller and callee."""
SATURATION_CPUS = 0.3
"""CPUs the balancer (its Kamailio and its Redis) may use in the saturation run
(``cpu_quota``): a host every contender fills, native alg 4 too (at half a CPU it answered
nearly all of the calls offered on this machine's faster days), so the balancer is the
bottleneck and not SIPp; 0 runs it unconfined."""
SATURATION_S = 6.0
SATURATION_HOLD_MS = 3000
"""Calls held longer than in the rates above: more dialogs in flight, as on a loaded host."""
SATURATION_CONTENDERS = ("ds4", "kemi4", "counterpoise", "cp-noloc")
SATURATION_TARGET = 0.9
"""At saturation, Counterpoise answers at least this share of the calls/s alg 4 answers."""
SATURATED_SHARE = 0.95
"""The reference is saturated when it answered at most this share of the calls offered
(median over the rounds); when it answered more, the run says nothing of saturation and the
target is not judged."""


def warm_up(running: Running, run_dir: Path) -> None:
    drive.measure(running, None, None, run_dir / "warmup", drive.Load(100, HOLD_MS), WARMUP_S)


def idle_cpu(running: Running, seconds: float) -> dict:
    """CPU seconds of the balancer (and its store) over ``seconds`` without calls."""
    cpu, store = running.cpu_seconds(), running.extra_cpu()
    time.sleep(seconds)  # the measured window itself: nothing to wait for
    return {
        "rate": 0,
        "window_s": seconds,
        "cpu_s": running.cpu_seconds() - cpu,
        "store_cpu_s": running.extra_cpu() - store,
    }


def warm_turns(
    contenders: Sequence[Contender],
    index: int,
    work: Path,
    part: str,
    uas: Target,
    redis_url: str,
) -> Iterator[tuple[Contender, Running, Path]]:
    """Each contender's turn in round ``index`` (each round starts with the next one, so slow
    changes of the machine's load spread over all of them): started fresh, warmed up, and
    stopped once its turn is over."""
    for i in range(len(contenders)):
        contender = contenders[(index + i) % len(contenders)]
        run_dir = work / f"{part}{index + 1}-{contender.name}"
        running = contender.start([uas], run_dir, redis_url)
        try:
            warm_up(running, run_dir)
            yield contender, running, run_dir
        finally:
            running.stop()


def one_round(
    index: int,
    contenders: Sequence[Contender],
    uas: Target,
    work: Path,
    redis_url: str,
    rates: Sequence[float],
    step_s: float,
    say: Callable[[str], None],
) -> dict:
    """Each contender in turn (order rotated by ``index``): idle, then each rate."""
    record: dict = {"round": index + 1, "loadavg_start": os.getloadavg(), "steps": []}
    for contender, running, run_dir in warm_turns(contenders, index, work, "round", uas, redis_url):
        step = idle_cpu(running, IDLE_S)
        record["steps"].append({"contender": contender.name, **step, "calls": 0})
        for rate in rates:
            load = drive.Load(rate, HOLD_MS)
            m = drive.measure(running, None, None, run_dir / f"rate-{rate:g}", load, step_s)
            per_call = m.cpu_per_call_ms
            record["steps"].append(
                {
                    "contender": contender.name,
                    "rate": rate,
                    "calls": m.sipp.attempted,
                    "failed": m.sipp.failed,
                    "cpu_s": m.cpu_s,
                    "store_cpu_s": m.store_cpu_s,
                    "machine_busy": m.machine_busy,
                }
            )
            say(
                f"      round {index + 1} {contender.name:13s} {rate:5g} calls/s: "
                f"{m.sipp.failed} failed, {per_call:.3f} ms CPU/call "
                f"({1000 * m.store_cpu_s / max(1, m.sipp.attempted):.3f} Redis)"
            )
    record["loadavg_end"] = os.getloadavg()
    return record


def saturation_round(
    index: int,
    contenders: Sequence[Contender],
    uas: Target,
    work: Path,
    redis_url: str,
    rate: float,
    say: Callable[[str], None],
    cpus: float = SATURATION_CPUS,
) -> dict:
    """Each contender in turn (order rotated by ``index``) offered ``rate`` calls/s: how
    many it answered, its processes confined to ``cpus`` CPUs (0: not confined)."""
    record: dict = {"round": index + 1, "loadavg_start": os.getloadavg(), "steps": []}
    turns = warm_turns(contenders, index, work, "saturation", uas, redis_url)
    for contender, running, run_dir in turns:
        load = drive.Load(rate, SATURATION_HOLD_MS)
        quota = cpu_quota.confined(running.pids(), cpus) if cpus else contextlib.nullcontext()
        with quota:
            m = drive.measure(running, None, None, run_dir / "load", load, SATURATION_S)
        answered = m.sipp.attempted - m.sipp.failed
        record["steps"].append(
            {
                "contender": contender.name,
                "rate": rate,
                "calls": m.sipp.attempted,
                "answered": answered,
                "seconds": SATURATION_S,
                "cpu_s": m.cpu_s,
                "store_cpu_s": m.store_cpu_s,
                "machine_busy": m.machine_busy,
                "cpus": cpus,
            }
        )
        say(
            f"      saturation {index + 1} {contender.name:13s} {rate:5g} calls/s offered: "
            f"{answered / SATURATION_S:.0f} answered/s ({answered}/{m.sipp.attempted}), "
            f"machine {m.machine_busy:.0%} busy"
        )
    return record


def run(
    work: Path,
    redis_url: str,
    uas_uri: str,
    names: Sequence[str],
    rounds: int,
    step_s: float,
    sustained: bool,
    save: Callable[[dict], None],
    say: Callable[[str], None] = print,
    saturation_rate: float = SATURATION_RATE,
    saturating: Sequence[str] = SATURATION_CONTENDERS,
    saturation_cpus: float = SATURATION_CPUS,
) -> dict:
    """The rounds at ``RATES``, the saturation rounds at ``saturation_rate`` (0: none) of
    the contenders of ``names`` that ``saturating`` lists, the sustained ramp."""
    contenders = [BY_NAME[name] for name in names]
    uas = Target("uas", uas_uri, 0.0)
    result: dict = {
        "rates": list(RATES),
        "contenders": {c.name: c.label for c in contenders},
        "reference": REFERENCE,
        "step_s": step_s,
        "idle_s": IDLE_S,
        "hold_ms": HOLD_MS,
        "rounds": [],
        "saturation": [],
        "sustained": [],
    }
    for index in range(rounds):
        say(f"overhead round {index + 1}/{rounds}, load average {os.getloadavg()}")
        result["rounds"].append(
            one_round(index, contenders, uas, work, redis_url, RATES, step_s, say)
        )
        save(result)
    saturated = [c for c in contenders if c.name in saturating]
    for index in range(rounds if saturation_rate and saturated else 0):
        say(f"saturation round {index + 1}/{rounds}, load average {os.getloadavg()}")
        result["saturation"].append(
            saturation_round(
                index, saturated, uas, work, redis_url, saturation_rate, say, saturation_cpus
            )
        )
        save(result)
    if sustained:
        loads = [drive.Load(rate, HOLD_MS) for rate in SUSTAINED_RATES]
        for name in SUSTAINED_CONTENDERS:
            say(f"sustained rate: {name} {SUSTAINED_RATES}")
            result["sustained"].append(
                capacity.ramp(
                    BY_NAME[name],
                    [uas],
                    None,
                    work / f"sustained-{name}",
                    redis_url,
                    loads,
                    SUSTAINED_STEP_S,
                    say,
                    SUSTAINED_TRIES,
                )
            )
            save(result)
    return result


# --- the arithmetic of the report ----------------------------------------------------------


def per_call_ms(step: dict) -> float:
    """Balancer plus store CPU per call, ms."""
    return 1000 * (step["cpu_s"] + step["store_cpu_s"]) / max(1, step["calls"])


def usable(step: dict) -> bool:
    return step.get("failed", 0) <= BAD_STEP_FAILED * max(1, step["calls"])


def _steps(result: dict, contender: str, rate: float) -> list[dict]:
    return [
        step
        for record in result["rounds"]
        for step in record["steps"]
        if step["contender"] == contender and step["rate"] == rate and usable(step)
    ]


def median_per_call(result: dict, contender: str, rate: float) -> float | None:
    values = [per_call_ms(step) for step in _steps(result, contender, rate)]
    return statistics.median(values) if values else None


def median_ratio(result: dict, contender: str, reference: str, rate: float) -> float | None:
    """The median over rounds of a round's own ratio of CPU per call, ``contender`` to
    ``reference`` at ``rate``: a round runs both within minutes of each other, so the
    machine's slow drifts, which move whole runs by up to a quarter here, cancel in it."""
    ratios = []
    for record in result["rounds"]:
        steps = {
            s["contender"]: s
            for s in record["steps"]
            if s["rate"] == rate and s["contender"] in (contender, reference) and usable(s)
        }
        if contender in steps and reference in steps and per_call_ms(steps[reference]) > 0:
            ratios.append(per_call_ms(steps[contender]) / per_call_ms(steps[reference]))
    return statistics.median(ratios) if ratios else None


def median_store_per_call(result: dict, contender: str, rate: float) -> float | None:
    values = [1000 * s["store_cpu_s"] / max(1, s["calls"]) for s in _steps(result, contender, rate)]
    return statistics.median(values) if values else None


def median_idle_ms_per_s(result: dict, contender: str) -> float | None:
    """Fixed cost: CPU ms per second with no calls, balancer plus store."""
    values = [
        1000 * (s["cpu_s"] + s["store_cpu_s"]) / s["window_s"] for s in _steps(result, contender, 0)
    ]
    return statistics.median(values) if values else None


def median_marginal(result: dict, contender: str, low: float, high: float) -> float | None:
    """CPU ms per extra call between two rates, per round, median over rounds."""
    values = []
    for record in result["rounds"]:
        steps = {s["rate"]: s for s in record["steps"] if s["contender"] == contender and usable(s)}
        if low in steps and high in steps:
            a, b = steps[low], steps[high]
            extra_calls = b["calls"] - a["calls"]
            cpu = (b["cpu_s"] + b["store_cpu_s"]) - (a["cpu_s"] + a["store_cpu_s"])
            if extra_calls > 0:
                values.append(1000 * cpu / extra_calls)
    return statistics.median(values) if values else None


def failed(result: dict, contender: str) -> tuple[int, int]:
    """Calls failed, and steps left out of the medians for it."""
    steps = [s for r in result["rounds"] for s in r["steps"] if s["contender"] == contender]
    return sum(s.get("failed", 0) for s in steps), sum(not usable(s) for s in steps)


def failed_text(result: dict, contender: str) -> str:
    calls, left_out = failed(result, contender)
    return f"{calls} ({left_out} steps left out)" if left_out else str(calls)


def _saturation_median(
    result: dict, contender: str, of_step: Callable[[dict], float]
) -> float | None:
    """Median over the saturation rounds of ``of_step`` of ``contender``'s steps."""
    values = [
        of_step(step)
        for record in result.get("saturation", [])
        for step in record["steps"]
        if step["contender"] == contender
    ]
    return statistics.median(values) if values else None


def answered_per_s(result: dict, contender: str) -> float | None:
    """Median over the saturation rounds of the calls/s ``contender`` answered."""
    return _saturation_median(result, contender, lambda step: step["answered"] / step["seconds"])


def answered_share(result: dict, contender: str) -> float | None:
    """Median over the saturation rounds of the share of offered calls ``contender``
    answered."""
    return _saturation_median(
        result, contender, lambda step: step["answered"] / max(1, step["calls"])
    )


def render_saturation(result: dict) -> list[str]:
    records = result.get("saturation", [])
    if not records:
        return []
    ref = result["reference"]
    names = list(dict.fromkeys(s["contender"] for r in records for s in r["steps"]))
    rate = records[0]["steps"][0]["rate"]
    cpus = records[0]["steps"][0].get("cpus", 0)
    host = (
        f"its Kamailio and Redis confined to {cpus:g} CPU by a CPU-quota cgroup "
        "(bench/cpu_quota.py), SIPp's caller and callee on the rest of the cores, so the "
        "balancer is the bottleneck"
        if cpus
        else "past what the host takes with SIPp's caller and callee on the same cores"
    )
    lines = [
        f"## Saturation: answered calls/s at {rate:g} calls/s offered",
        "",
        f"Each contender offered {rate:g} calls/s for {SATURATION_S:g} s (calls held "
        f"{SATURATION_HOLD_MS} ms), {host}; {len(records)} rounds alternating the contenders, "
        "medians. A call counts as answered when SIPp's caller completed it (its 200 came "
        "before the caller's timeout). Balancer CPU: the CPU seconds its processes used in the "
        "step (the calls' holding time and the callers' last retransmissions included).",
        "",
        f"| contender | answered calls/s | answered | vs {ref} | balancer CPU s | machine busy |",
        "|---|---|---|---|---|---|",
    ]
    reference = answered_per_s(result, ref)
    for name in names:
        steps = [s for r in records for s in r["steps"] if s["contender"] == name]
        value = answered_per_s(result, name)
        share = answered_share(result, name) or 0.0
        busy = statistics.median(s["machine_busy"] for s in steps)
        used = statistics.median(s["cpu_s"] + s["store_cpu_s"] for s in steps)
        lines.append(
            f"| {name} | {_ms(value, 0)} | {share:.0%} | {_ratio(value, reference)} "
            f"| {used:.1f} | {busy:.0%} |"
        )
    return ["", *lines]


def sustained_rate(result: dict, contender: str) -> float | None:
    for ramp in result["sustained"]:
        if ramp["contender"] == contender:
            return float(ramp["highest_sustained"])
    return None


def _ratio(value: float | None, reference: float | None) -> str:
    if value is None or not reference:
        return "-"
    return f"{value / reference:.2f}x"


def _ms(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


TARGETS = (("counterpoise", 1.3), ("cp-noloc", 1.15))
"""Issue 15: CPU per call at most 1.3x alg 4 at 300 and 1000 calls/s with the location
server on, 1.15x with it off."""
TARGET_RATES = (300, 1000)
SUSTAINED_TARGET = 0.9


def render(result: dict) -> str:
    ref = result["reference"]
    rates = result["rates"]
    names = list(result["contenders"])
    loads = [record["loadavg_start"][0] for record in result["rounds"]]
    lines = [
        "## Overhead: CPU per call (issue 15)",
        "",
        f"One balancer relaying to one downstream (the SIPp UAS: INVITE with a user in the "
        f"R-URI, 200, ACK, BYE, 200; calls held {result['hold_ms']} ms), "
        f"{len(result['rounds'])} rounds alternating the contenders, each started fresh, "
        f"{result['step_s']:g} s of calls per rate. CPU is user + system from `/proc` of every "
        f"process the balancer needs: its Kamailio processes and, for Counterpoise, its Redis "
        f"(in brackets). Medians over the rounds, each balancer warmed up by {WARMUP_S:g} s of "
        f"calls first; a step where over {BAD_STEP_FAILED:.0%} of calls failed is left out. "
        f"1-minute load average at the start of each "
        f"round: {', '.join(f'{load:.2f}' for load in loads)} (2 cores; other work on the "
        f"machine shows in these figures).",
        "",
        "Contenders: "
        + "; ".join(f"`{name}` {label}" for name, label in result["contenders"].items())
        + ". Fixed cost: CPU per second with no calls (timers, probes, Redis), "
        f"measured over {result['idle_s']:g} s (10 ms clock ticks: 2.5 ms/s resolution). "
        f'"vs {ref}": the median over the rounds of each round\'s own ratio, which the '
        "machine's slow drifts between rounds do not move.",
        "",
        "| contender | fixed ms CPU/s idle | "
        + " | ".join(f"{rate:g}/s ms/call (Redis)" for rate in rates)
        + " | "
        + " | ".join(f"{rate:g}/s vs {ref}" for rate in rates)
        + " | failed calls |",
        "|---" * (3 + 2 * len(rates)) + "|",
    ]
    for name in names:
        per_rate = [median_per_call(result, name, rate) for rate in rates]
        stores = [median_store_per_call(result, name, rate) for rate in rates]
        cells = [
            f"{_ms(value)} ({_ms(store)})" if store else _ms(value)
            for value, store in zip(per_rate, stores, strict=True)
        ]
        paired = [median_ratio(result, name, ref, rate) for rate in rates]
        ratios = ["-" if ratio is None else f"{ratio:.2f}x" for ratio in paired]
        idle = _ms(median_idle_ms_per_s(result, name), 1)
        lines.append(
            f"| {name} | {idle} | {' | '.join(cells)} | {' | '.join(ratios)} | "
            f"{failed_text(result, name)} |"
        )
    lines += [
        "",
        "Marginal cost: CPU ms per extra call between two rates (per round, median), "
        "which the fixed costs do not touch:",
        "",
        "| contender | "
        + " | ".join(f"{a:g} -> {b:g}/s" for a, b in itertools.pairwise(rates))
        + " | "
        + " | ".join(f"vs {ref}" for _ in rates[1:])
        + " |",
        "|---" * (1 + 2 * (len(rates) - 1)) + "|",
    ]
    pairs = list(itertools.pairwise(rates))
    for name in names:
        values = [median_marginal(result, name, a, b) for a, b in pairs]
        refs = [median_marginal(result, ref, a, b) for a, b in pairs]
        lines.append(
            f"| {name} | {' | '.join(_ms(v) for v in values)} | "
            f"{' | '.join(_ratio(v, r) for v, r in zip(values, refs, strict=True))} |"
        )
    lines += render_saturation(result)
    lines += ["", *render_targets(result)]
    return "\n".join(lines) + "\n"


def render_targets(result: dict) -> list[str]:
    ref = result["reference"]
    lines = ["| target | measured | verdict |", "|---|---|---|"]
    for name, limit in TARGETS:
        if name not in result["contenders"]:
            continue
        for rate in TARGET_RATES:
            value = median_per_call(result, name, rate)
            reference = median_per_call(result, ref, rate)
            ratio = median_ratio(result, name, ref, rate)
            if value is None or not reference or ratio is None:
                continue
            verdict = "met" if ratio <= limit else f"missed: {ratio:.2f}x instead of <= {limit}x"
            lines.append(
                f"| {name} CPU per call at most {limit}x {ref} at {rate:g}/s | "
                f"the rounds' own ratios: median {ratio:.2f}x (medians {value:.3f} vs "
                f"{reference:.3f} ms/call: {value / reference:.2f}x) | {verdict} |"
            )
    reference_share = answered_share(result, ref)
    for name in ("counterpoise", "cp-noloc"):
        ours, theirs = answered_per_s(result, name), answered_per_s(result, ref)
        if ours is not None and theirs:
            ratio = ours / theirs
            verdict = "met" if ratio >= SATURATION_TARGET else f"missed: {ratio:.2f}x"
            if reference_share is not None and reference_share > SATURATED_SHARE:
                verdict = f"not judged: {ref} answered {reference_share:.0%}, not saturated"
            lines.append(
                f"| {name} answered calls/s at saturation at least {SATURATION_TARGET}x {ref} | "
                f"{ours:.0f} vs {theirs:.0f} calls/s: {ratio:.2f}x | {verdict} |"
            )
    ours, theirs = sustained_rate(result, "counterpoise"), sustained_rate(result, ref)
    if ours is not None and theirs:
        ratio = ours / theirs
        tried = max(SUSTAINED_RATES)
        bound = f" (both sustained every rate tried, up to {tried}: a lower bound)" * (
            ours == theirs == tried
        )
        verdict = "met" if ratio >= SUSTAINED_TARGET else f"missed: {ratio:.2f}x"
        lines.append(
            f"| sustained rate at least {SUSTAINED_TARGET}x {ref} | "
            f"{ours:g} vs {theirs:g} calls/s: {ratio:.2f}x{bound} | {verdict} |"
        )
    return lines
