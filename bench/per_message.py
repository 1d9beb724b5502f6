"""Where a call's CPU goes in Counterpoise, message by message (``python -m bench
--per-message``, or ``python -m bench.per_message``).

One balancer (``up``'s kamailio.cfg, default settings) in front of one downstream Kamailio
proxy (which sends 100 Trying) and the SIPp UAS (180, 200, then the BYE's 200), calls at
``RATE`` for ``SECONDS``. The object its ``python_exec`` calls (``Embedded``) is wrapped by
``bench/ksr_profile.py`` through an entry script of its own (the shipped one is untouched).
Only the messages that enter Python are filed. Two runs: one counting every KSR call
by kind (Python entries, htable reads and writes, AVP and other pseudo-variable operations,
decodes and encodes of shared values), one timing the hooks alone (no counting wrapper, so
the figures are the balancer's own). The table gives, per message kind, the average per
message; "per call" sums one call's messages.
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

from harness import testbed

from bench import drive
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


def run(
    work: Path,
    python_profile: Path | None = None,
    overrides: Mapping[str, object] | None = None,
) -> dict:
    """Both runs against one downstream proxy and the UAS behind it; with
    ``python_profile``, a third under cProfile, its stats summed in that file;
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


def render(result: dict) -> str:
    counting, timing = result["counting"], result["timing"]
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
        "kind's figures are per call, zero where the config's native routes handle it alone.",
        "",
        "| message | messages | "
        + " | ".join(label for _, label in COUNTED)
        + " | CPU µs | wall µs | in KSR | in t_relay |",
        "|---" * (len(COUNTED) + 6) + "|",
    ]
    calls_counted = counting.get("INVITE", {}).get("messages", 0)
    calls_timed = timing.get("INVITE", {}).get("messages", 0)
    for kind in CALL_MESSAGES:
        kind_c, kind_t = counting.get(kind, {}), timing.get(kind, {})
        if kind == HELD_INVITE:
            lines.append(_kind_row(kind, kind_c, kind_t))
        else:  # one per call, whether it enters Python or stays in the config's routes
            lines.append(_row(kind, kind_c, kind_t, calls_counted, calls_timed))
    call_c, call_t = _summed(counting, CALL_MESSAGES), _summed(timing, CALL_MESSAGES)
    lines.append(_row("**per call**", call_c, call_t, calls_counted, calls_timed))
    for kind in sorted((set(counting) | set(timing)) - set(CALL_MESSAGES)):
        if not counting.get(kind, {}).get("messages") and not timing.get(kind, {}).get("messages"):
            continue  # a hook entered outside any message of its own
        lines.append(_kind_row(kind, counting.get(kind, {}), timing.get(kind, {})))
    return "\n".join(lines) + "\n"


def _kind_row(kind: str, counting: Mapping[str, int], timing: Mapping[str, int]) -> str:
    return _row(kind, counting, timing, counting.get("messages", 0), timing.get("messages", 0))


def _row(
    label: str, counting: Mapping[str, int], timing: Mapping[str, int], counted: int, timed: int
) -> str:
    """Each count per ``counted`` message (or call), the times per ``timed`` one."""
    cells = [f"{_per(counting, what, counted):.1f}" for what, _ in COUNTED]
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
