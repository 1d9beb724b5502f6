"""Where a call's CPU goes in Counterpoise, message by message (``python -m bench
--per-message``, or ``python -m bench.per_message``).

One balancer (``up``'s kamailio.cfg, default settings) in front of one downstream Kamailio
proxy (which sends 100 Trying) and the SIPp UAS (180, 200, then the BYE's 200), calls at
``RATE`` for ``SECONDS``. The object its ``python_exec`` calls (``Embedded``) is wrapped by
``bench/ksr_profile.py`` through an entry script of its own (the shipped one is untouched).
Only the messages that enter Python are filed. Three runs: one counting every KSR call
by kind (Python entries, htable reads and writes, AVP and other pseudo-variable operations,
decodes and encodes of shared values), one timing the hooks alone (no counting wrapper, so
the figures are the balancer's own), and a slow one counting the config actions each message
runs in Kamailio's interpreter (``bench/cfg_trace.py``). The table gives, per message kind,
the average per message; "per call" sums one call's messages.
"""

from __future__ import annotations

import argparse
import json
import pstats
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness import testbed

from bench import cfg_trace, drive
from bench.contenders import start_counterpoise
from bench.pool import Target
from bench.setting_args import parse_settings
from counterpoise import processes

RATE = 200
"""Calls/s: a busy but unsaturated node, where each message's cost is its own."""
SECONDS = 15.0
WARMUP_S = 3.0
"""Calls before the measured window: first allocations, first Redis connections."""
HOLD_MS = 1000
PROXY_WORKERS = 4
HELD_INVITE = "INVITE (held, resumed)"
CALL_MESSAGES = (
    "INVITE",
    HELD_INVITE,
    "100 INVITE",
    "180 INVITE",
    "200 INVITE",
    "ACK",
    "BYE",
    "200 BYE",
)
"""The messages of one call as the balancer receives them, in order; an INVITE held at the
balancer (a proxy at its limit) is routed when the release tick resumes it."""
COUNTED = (
    ("entries", "Python entries"),
    ("ksr_calls", "KSR calls"),
    ("htable_read", "htable reads"),
    ("htable_write", "htable writes"),
    ("avp_read", "AVP reads"),
    ("avp_write", "AVP writes"),
    ("pv_read", "other PV reads"),
    ("decode", "decodes"),
    ("encode", "encodes"),
)
BENCH_DIR = Path(__file__).resolve().parent
ENTRY = '''"""Bench-only entry script: Counterpoise wrapped by bench/ksr_profile.py."""
import sys
from pathlib import Path

sys.path[:0] = [{kemi!r}, {repo!r}]
from bench import ksr_profile

_recorder = ksr_profile.install(Path({out!r}), {counting!r}, {python_profile!r})
ksr_profile.count_codecs(_recorder) if {counting!r} else None

from counterpoise.kamailio.embed import Embedded


def mod_init():
    return ksr_profile.Profiled(Embedded(native=True), _recorder)
'''

Totals = dict[str, dict[str, int]]


def profiling_tree(tree: Path, out: Path, counting: bool, python_profile: bool = False) -> Path:
    """A source tree for ``start_counterpoise``: the repository's kamailio.cfg and include, and
    entry script that wraps Counterpoise in the profiler writing to ``out``."""
    (tree / "kemi").mkdir(parents=True, exist_ok=True)
    (tree / "kamailio.cfg").symlink_to(processes.REPO / "kamailio.cfg")
    (tree / "embed").symlink_to(processes.REPO / "embed")
    entry = ENTRY.format(
        kemi=str(processes.REPO / "kemi"),
        repo=str(processes.REPO),
        out=str(out),
        counting=counting,
        python_profile=python_profile,
    )
    (tree / "kemi" / "counterpoise_native.py").write_text(entry)
    return tree


def read_totals(out: Path) -> Totals:
    """Every process's totals, summed per message kind."""
    totals: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for path in out.glob("*.json"):
        for kind, counts in json.loads(path.read_text()).items():
            for what, value in counts.items():
                totals[kind][what] += value
    return {kind: dict(counts) for kind, counts in totals.items()}


def difference(after: Totals, before: Totals) -> Totals:
    return {
        kind: {what: value - before.get(kind, {}).get(what, 0) for what, value in counts.items()}
        for kind, counts in after.items()
    }


def one_run(
    work: Path,
    redis_url: str,
    target: Target,
    counting: bool,
    python_profile: bool = False,
    overrides: Mapping[str, object] | None = None,
) -> Totals:
    """The totals of the measured window of one profiled balancer (``overrides``: settings
    other than the defaults)."""
    name = "cprofile" if python_profile else "counting" if counting else "timing"
    out = work / f"{name}-profile"
    tree = profiling_tree(work / f"{name}-tree", out, counting, python_profile)
    running = start_counterpoise([target], work / name, redis_url, overrides, tree=tree)
    try:
        warm = drive.Load(RATE, HOLD_MS)
        drive.measure(running, None, None, work / name / "warmup", warm, WARMUP_S)
        before = read_totals(out)
        load = drive.Load(RATE, HOLD_MS)
        measured = drive.measure(running, None, None, work / name / "load", load, SECONDS)
        if measured.sipp.failed:
            print(f"per-message ({name}): {measured.sipp.failed} calls failed", flush=True)
        return difference(read_totals(out), before)
    finally:
        running.stop()


def traced_run(
    work: Path, redis_url: str, target: Target, overrides: Mapping[str, object] | None = None
) -> dict[str, Any]:
    """The config actions of a call's messages (``bench/cfg_trace.py``), per call."""
    tree = cfg_trace.tracing_tree(work / "tracing-tree")
    run_dir = work / "tracing"
    running = start_counterpoise([target], run_dir, redis_url, overrides, tree=tree)
    log = run_dir / "balancer.log"
    try:
        warm = drive.Load(cfg_trace.RATE, HOLD_MS)
        drive.measure(running, None, None, run_dir / "warmup", warm, cfg_trace.WARMUP_S)
        start = log.stat().st_size
        load = drive.Load(cfg_trace.RATE, HOLD_MS)
        measured = drive.measure(running, None, None, run_dir / "load", load, cfg_trace.SECONDS)
    finally:
        running.stop()
    if measured.sipp.failed:
        print(f"per-message (tracing): {measured.sipp.failed} calls failed", flush=True)
    with log.open(errors="replace") as stream:
        stream.seek(start)
        actions = cfg_trace.count(stream, CALL_MESSAGES)
    return {
        "calls": measured.sipp.successful,
        "by_message": dict(actions.by_message),
        "by_route": dict(actions.by_route),
    }


def run(
    work: Path,
    python_profile: Path | None = None,
    overrides: Mapping[str, object] | None = None,
) -> dict[str, Any]:
    """The three runs against one downstream proxy and the UAS behind it; with
    ``python_profile``, a fourth under cProfile, its stats summed in that file;
    ``overrides``: Counterpoise settings other than the defaults, in every run."""
    redis = processes.start_redis(processes.free_port(), work / "redis")
    uas_port = processes.free_port()
    uas = testbed.start_uas(uas_port, work / "uas")
    proxy = testbed.Downstream(
        "proxy", processes.free_port(), PROXY_WORKERS, f"sip:127.0.0.1:{uas_port}", work, False
    )
    try:
        proxy.start()
        target = Target("proxy", proxy.uri, 0.0)
        redis_url = f"redis://127.0.0.1:{redis.argv[redis.argv.index('--port') + 1]}/0"
        result = {
            "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
            "rate": RATE,
            "seconds": SECONDS,
            "settings": {name: str(value) for name, value in (overrides or {}).items()},
            "counting": one_run(work, redis_url, target, True, overrides=overrides),
            "timing": one_run(work, redis_url, target, False, overrides=overrides),
            "actions": traced_run(work, redis_url, target, overrides),
        }
        if python_profile is not None:
            one_run(work, redis_url, target, False, python_profile=True, overrides=overrides)
            merged = pstats.Stats(*map(str, (work / "cprofile-profile").glob("*.prof")))
            merged.dump_stats(python_profile)
        return result
    finally:
        proxy.stop()
        uas.stop()
        redis.stop()


def _per(counts: Mapping[str, int], what: str, messages: int) -> float:
    return counts.get(what, 0) / max(1, messages)


def _summed(totals: Totals, kinds: tuple[str, ...]) -> dict[str, int]:
    summed: dict[str, int] = defaultdict(int)
    for kind in kinds:
        for what, value in totals.get(kind, {}).items():
            summed[what] += value
    return summed


def render(result: Mapping[str, Any]) -> str:
    counting, timing, actions = result["counting"], result["timing"], result["actions"]
    traced_calls = max(1, actions["calls"])  # each brings one message of each kind
    settings = ", ".join(f"`{name}={value}`" for name, value in result.get("settings", {}).items())
    lines = [
        "## Per-message cost of Counterpoise",
        "",
        f"Started {result['started_utc']} UTC. One balancer (`up`'s config, "
        f"{'default settings but ' + settings if settings else 'default settings'}) "
        f"in front of one downstream Kamailio and the SIPp UAS, {result['rate']} calls/s for "
        f"{result['seconds']:g} s, calls held {HOLD_MS} ms. Counts per message come from a run "
        "with every KSR call counted; CPU and wall µs per message from a second run without "
        "the counting wrapper (CPU: the worker's own CPU time inside the hooks, Python and the "
        "KSR calls it makes; wall: the same span on the clock). In KSR, in t_relay: the share "
        "of the hooks' wall time (counted run) spent inside KSR calls (Kamailio's native work), "
        "and in `t_relay` alone (the relay itself, branch route included); the rest is Python. "
        "Messages: counted run / timed run; each call brings one message of each kind, so a "
        "kind's figures are per call, zero where the config's native routes handle it alone. "
        f"Config actions: what each message runs in Kamailio's interpreter, per call, from a "
        f"third run at {cfg_trace.RATE} calls/s with every action traced "
        f"({actions['calls']} calls; `bench/cfg_trace.py`): the native routes' share of the "
        "work, which the other columns do not see.",
        "",
        "| message | messages | "
        + " | ".join(label for _, label in COUNTED)
        + " | config actions | CPU µs | wall µs | in KSR | in t_relay |",
        "|---" * (len(COUNTED) + 7) + "|",
    ]
    calls_counted = counting.get("INVITE", {}).get("messages", 0)
    calls_timed = timing.get("INVITE", {}).get("messages", 0)
    for kind in CALL_MESSAGES:
        kind_c, kind_t = counting.get(kind, {}), timing.get(kind, {})
        if kind == HELD_INVITE:  # the traced run holds none
            lines.append(_kind_row(kind, kind_c, kind_t))
        else:  # one per call, whether it enters Python or stays in the config's routes
            traced = actions["by_message"].get(kind, 0) / traced_calls
            lines.append(_row(kind, kind_c, kind_t, calls_counted, calls_timed, traced))
    call_c, call_t = _summed(counting, CALL_MESSAGES), _summed(timing, CALL_MESSAGES)
    traced = sum(actions["by_message"].values()) / traced_calls
    lines.append(_row("**per call**", call_c, call_t, calls_counted, calls_timed, traced))
    for kind in sorted((set(counting) | set(timing)) - set(CALL_MESSAGES)):
        if not counting.get(kind, {}).get("messages") and not timing.get(kind, {}).get("messages"):
            continue  # a hook entered outside any message of its own
        lines.append(_kind_row(kind, counting.get(kind, {}), timing.get(kind, {})))
    lines += [
        "",
        "Config actions per call, by route (the route an action runs in; a route type in "
        "brackets: `request_route` for the routes a request calls, `onreply_route` for a "
        "reply's, `branch_route` for a relayed branch's):",
        "",
        "| route | actions per call |",
        "|---|---|",
    ]
    by_route = sorted(actions["by_route"].items(), key=lambda item: (-item[1], item[0]))
    lines += [f"| {route} | {count / traced_calls:.1f} |" for route, count in by_route]
    return "\n".join(lines) + "\n"


def _kind_row(kind: str, counting: Mapping[str, int], timing: Mapping[str, int]) -> str:
    return _row(kind, counting, timing, counting.get("messages", 0), timing.get("messages", 0))


def _row(
    label: str,
    counting: Mapping[str, int],
    timing: Mapping[str, int],
    counted: int,
    timed: int,
    actions: float | None = None,
) -> str:
    """Each count per ``counted`` message (or call), the times per ``timed`` one; ``actions``:
    the config actions per call, None where they were not traced."""
    cells = [f"{_per(counting, what, counted):.1f}" for what, _ in COUNTED]
    cells.append("-" if actions is None else f"{actions:.1f}")
    cpu_us = _per(timing, "cpu_ns", timed) / 1000
    wall_us = _per(timing, "wall_ns", timed) / 1000
    hook_wall = counting.get("wall_ns", 0)
    ksr_share = counting.get("ksr_wall_ns", 0) / hook_wall if hook_wall else 0.0
    relay_share = counting.get("ns KSR.tm.t_relay", 0) / hook_wall if hook_wall else 0.0
    times = f"{cpu_us:.1f} | {wall_us:.1f} | {ksr_share:.0%} | {relay_share:.0%}"
    return f"| {label} | {counted} / {timed} | {' | '.join(cells)} | {times} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench --per-message", description=__doc__)
    parser.add_argument("--out", type=Path, help="results folder (default bench/results/...)")
    parser.add_argument("--publish", type=Path, help="also copy the table to DIR/per-message.md")
    parser.add_argument("--keep-logs", action="store_true", help="keep the logs folder")
    parser.add_argument(
        "--cprofile",
        action="store_true",
        help="a third run under cProfile (every worker, warm-up included): python.prof",
    )
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a Counterpoise setting other than its default (e.g. location_server=false); "
        "repeat for more",
    )
    args = parser.parse_args(argv)
    overrides = dict(parse_settings(args.setting))
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out = args.out or BENCH_DIR / "results" / f"{stamp}-per-message"
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="counterpoise-per-message-"))
    print(f"per-message bench: results in {out}, logs in {work}", flush=True)
    result = run(work, out / "python.prof" if args.cprofile else None, overrides)
    (out / "results.json").write_text(json.dumps(result, indent=1))
    (out / "per-message.md").write_text(render(result))
    print((out / "per-message.md").read_text(), flush=True)
    if args.publish:
        args.publish.mkdir(parents=True, exist_ok=True)
        shutil.copy(out / "per-message.md", args.publish / "per-message.md")
    if not args.keep_logs:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
