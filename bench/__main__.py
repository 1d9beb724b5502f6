"""``python -m bench``: every contender through every scenario on one pool, the capacity
sweep, the overhead bench and the selection micro-benchmark; writes ``results.json``,
``report.md`` and the PNG plots. ``scripts/bench.sh`` is the one command around it."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench import capacity, drive, overhead, pair_failover, per_message, plots, report, scenarios
from bench.contenders import BY_NAME, CONTENDERS, Contender, compared
from bench.pool import Pool, Target
from bench.setting_args import parse_settings
from bench.tap import InviteTap, TapUnavailable
from counterpoise import processes

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_LOAD = 0.7
"""Offered load as a fraction of the pool's total capacity (the issue's default)."""


@dataclasses.dataclass(frozen=True)
class Mode:
    timing: scenarios.Timing
    hold_ms: int
    contenders: tuple[str, ...]
    sweep_fractions: tuple[float, ...]
    """Sweep rates as fractions of the pool's total capacity."""
    sweep_step_s: float
    overhead_rates: tuple[float, ...]
    """Calls/s offered to a balancer in front of the UAS alone (no proxy, no sleeping)."""
    overhead_step_s: float
    load: float = DEFAULT_LOAD
    """Offered load of the scenarios, a fraction of the pool's capacity."""


ALL = tuple(contender.name for contender in CONTENDERS)
MODES = {
    # About 40 minutes on a 2-core machine (22 before issue 14's four scenarios, which add
    # 32 runs of about 30 s each).
    "full": Mode(
        scenarios.Timing(
            steady_s=15,
            lead_s=6,
            slow_s=10,
            stall_s=4,
            dead_s=6,
            tail_s=5,
            big_stall_s=3,
            big_dead_s=5,
            warmup_s=5,
        ),
        drive.HOLD_MS,
        ALL,
        (0.5, 0.7, 0.8, 0.9, 1.0, 1.1),
        6.0,
        (100, 200, 400, 600, 800, 1000, 1300, 1600),
        5.0,
    ),
    # About 25 minutes: the same runs, shorter.
    "quick": Mode(
        scenarios.Timing(
            steady_s=10,
            lead_s=4,
            slow_s=6,
            stall_s=3,
            dead_s=5,
            tail_s=4,
            big_stall_s=3,
            big_dead_s=5,
            warmup_s=4,
        ),
        drive.HOLD_MS,
        ALL,
        (0.5, 0.7, 0.9, 1.1),
        4.0,
        (100, 300, 600, 1000),
        3.0,
    ),
    # Under a minute, for CI: every code path, two contenders, seconds each. Calls are not
    # held (a dialog held through the killed proxy would add the UAC's 10 s BYE timeout),
    # and the load is 30 %, below what round robin overloads the small proxy with, so no
    # run waits for failing calls to time out.
    "smoke": Mode(
        scenarios.Timing(
            steady_s=1.5,
            lead_s=1,
            slow_s=1,
            stall_s=1,
            dead_s=1,
            tail_s=0.5,
            big_stall_s=1,
            big_dead_s=1,
            warmup_s=0.5,
        ),
        0,
        ("counterpoise", "ds4"),
        (0.5,),
        1.5,
        (100,),
        1.5,
        load=0.3,
    ),
}


class Progress:
    def __init__(self, total_runs: int) -> None:
        self.start = time.monotonic()
        self.total = total_runs
        self.done = 0

    def say(self, text: str) -> None:
        print(text, flush=True)

    def step(self, label: str) -> None:
        self.done += 1
        elapsed = time.monotonic() - self.start
        self.say(f"[{self.done}/{self.total}  {elapsed / 60:4.1f} min]  {label}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__)
    parser.add_argument("--mode", choices=sorted(MODES), default="full")
    parser.add_argument("--quick", dest="mode", action="store_const", const="quick")
    parser.add_argument("--smoke", dest="mode", action="store_const", const="smoke")
    parser.add_argument(
        "--scenarios",
        help="comma-separated, of: steady,step,stall,kill,bigstall,bigkill,load85,load95,"
        "load110,load150, and the multi-node load70x2,load95x2,load110x2 (x3 too),bigstallx2",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the scenarios this many times (paired runs for the multi-node p99 target: 3)",
    )
    parser.add_argument("--contenders", help=f"comma-separated, of: {','.join(ALL)}")
    parser.add_argument("--load", type=float, help="fraction of the pool's capacity (0.7)")
    parser.add_argument("--no-sweep", action="store_true", help="skip the capacity sweep")
    parser.add_argument("--no-overhead", action="store_true", help="skip the overhead bench")
    parser.add_argument(
        "--overhead",
        action="store_true",
        help="run only the overhead bench of issue 15 (CPU per call at 100, 300, 1000 calls/s "
        f"against alg 4; --contenders of: {','.join(BY_NAME)})",
    )
    parser.add_argument(
        "--per-message",
        action="store_true",
        help="run only the per-message bench: where a call's CPU goes in Counterpoise "
        "(its own options: --per-message --help)",
    )
    parser.add_argument(
        "--pair",
        action="store_true",
        help="run only the node pair's failover (root: network namespaces), once per VRRP "
        "timing shipped in deploy/keepalived (1 s, 0.2 s) and per balancer on the nodes "
        "(Counterpoise, dispatcher)",
    )
    parser.add_argument("--rounds", type=int, default=overhead.ROUNDS, help="overhead rounds")
    parser.add_argument("--step-s", type=float, default=overhead.STEP_S, help="s per rate")
    parser.add_argument(
        "--no-sustained", action="store_true", help="overhead: skip the sustained-rate ramp"
    )
    parser.add_argument(
        "--saturation-rate",
        type=float,
        default=overhead.SATURATION_RATE,
        help="overhead: calls/s offered in the saturation run, past the host's capacity "
        "(0: no saturation run)",
    )
    parser.add_argument(
        "--saturation-cpus",
        type=float,
        default=overhead.SATURATION_CPUS,
        help="overhead: CPUs the balancer (Kamailio and Redis) may use in the saturation run, "
        "a CPU-quota cgroup (root; 0: unconfined)",
    )
    parser.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="NAME=TREE",
        help="overhead: also Counterpoise from source tree TREE (e.g. a git worktree of an "
        "older commit), as NAME and NAME-noloc",
    )
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a Counterpoise setting for every Counterpoise contender, other than its "
        "default (e.g. load_headroom_floor=1); repeat for more",
    )
    parser.add_argument("--out", type=Path, help="results folder (default bench/results/...)")
    parser.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep the logs folder (every balancer's log, SIPp's error files) after the run",
    )
    parser.add_argument(
        "--publish", type=Path, help="also copy report.md and the plots to this folder"
    )
    parser.add_argument(
        "--render",
        type=Path,
        metavar="DIR",
        help="run nothing: write report.md and the plots again from DIR/results.json",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--per-message" in argv:  # its own options (python -m bench --per-message --help)
        return per_message.main([arg for arg in argv if arg != "--per-message"])
    args = parse_args(argv)
    if args.render:
        render(args.render, args.publish)
        return 0
    if args.overhead:
        return run_overhead(args)
    if args.pair:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        out = args.out or BENCH_DIR / "results" / f"{stamp}-pair"
        print(pair_failover.report(pair_failover.run(out)), flush=True)
        return 0
    mode = MODES[args.mode]
    load = args.load if args.load is not None else mode.load
    names = args.contenders.split(",") if args.contenders else list(mode.contenders)
    unknown = [name for name in names if name not in BY_NAME]
    if unknown:
        raise SystemExit(f"bench: unknown contender(s) {', '.join(unknown)}")
    settings = with_settings(names, args.setting)
    contenders = [BY_NAME[name] for name in names]
    catalogue = scenarios.build(mode.timing)
    wanted = args.scenarios.split(",") if args.scenarios else list(catalogue)
    if any(name not in catalogue for name in wanted):
        raise SystemExit(f"bench: scenarios are {', '.join(catalogue)}")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out = args.out or BENCH_DIR / "results" / f"{stamp}-{args.mode}"
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="counterpoise-bench-"))
    runs = sum(
        1 for c in contenders for name in wanted if catalogue[name].nodes == 1 or not c.native
    )
    runs += 0 if args.no_sweep else len(contenders)
    runs += 0 if args.no_overhead else 2
    progress = Progress(runs)
    results: dict = {
        "mode": args.mode,
        "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "loadavg_start": os.getloadavg(),
        "cpus": os.cpu_count(),
        "load": load,
        "hold_ms": mode.hold_ms,
        "timing": dataclasses.asdict(mode.timing),
        "scenarios": {name: catalogue[name].description for name in wanted},
        "contenders": {c.name: c.label for c in contenders},
        "settings": settings,
        "runs": [],
        "sweep": [],
        "overhead": [],
        "errors": [],
    }
    progress.say(f"bench ({args.mode}): results in {out}, logs in {work}")
    redis = processes.start_redis(processes.free_port(), work / "redis")
    pool = Pool(work)
    session = Session(mode, pool, redis_url_of(redis), work, out, results, progress)
    try:
        pool.start()
        session.counter, results["share_counter"] = invite_counter(pool)
        rate = round(load * pool.total_capacity, 1)
        results.update(rate=rate, capacities=pool.capacities, total_capacity=pool.total_capacity)
        progress.say(
            f"pool: {', '.join(f'{n} {c:g}' for n, c in pool.capacities.items())} calls/s; "
            f"offered {rate:g} calls/s ({load:.0%}); {len(contenders)} contenders x "
            f"{len(wanted)} scenarios"
        )
        for repeat in range(args.repeat):
            session.scenarios(contenders, [catalogue[name] for name in wanted], rate, repeat)
        if not args.no_sweep:
            session.sweep(contenders)
        if not args.no_overhead:
            session.overhead()
    finally:
        session.stop_counter()
        pool.stop()
        redis.stop()
    progress.say("selection micro-benchmark (WeightedPicker.pick)")
    results["pick_us"] = capacity.pick_micro()
    results["loadavg_end"] = os.getloadavg()
    results["elapsed_s"] = time.monotonic() - progress.start
    save(out, results)
    render(out, args.publish)
    progress.say(f"{results['elapsed_s'] / 60:.1f} min")
    clean_up(work, args.keep_logs)
    return 0


def with_settings(names: list[str], pairs: list[str]) -> list[str]:
    """Give every Counterpoise contender among ``names`` the ``NAME=VALUE`` settings of
    ``--setting`` (the native ones have none); returns them as given, for the report."""
    extra = parse_settings(pairs)
    for name in names:
        if extra and not BY_NAME[name].native:
            BY_NAME[name] = dataclasses.replace(
                BY_NAME[name], settings=(*BY_NAME[name].settings, *extra)
            )
    return list(pairs)


def clean_up(work: Path, keep: bool) -> None:
    """Remove the logs folder, unless ``--keep-logs`` asked to keep it for a post-mortem."""
    if keep:
        print(f"logs kept in {work}", flush=True)
    else:
        shutil.rmtree(work, ignore_errors=True)


def run_overhead(args: argparse.Namespace) -> int:
    """``--overhead``: the overhead bench alone, its own results.json and report.md."""
    names = args.contenders.split(",") if args.contenders else list(overhead.CONTENDERS)
    saturating = list(overhead.SATURATION_CONTENDERS)
    for contender in compared(args.compare):
        names.append(contender.name)
        saturating.append(contender.name)
    unknown = [name for name in names if name not in BY_NAME]
    if unknown:
        raise SystemExit(f"bench: unknown contender(s) {', '.join(unknown)}")
    settings = with_settings(names, args.setting)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out = args.out or BENCH_DIR / "results" / f"{stamp}-overhead"
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="counterpoise-overhead-"))
    header = {
        "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "loadavg_start": os.getloadavg(),
        "cpus": os.cpu_count(),
        "settings": settings,
    }
    print(f"overhead bench: results in {out}, logs in {work}", flush=True)
    redis = processes.start_redis(processes.free_port(), work / "redis")
    pool = Pool(work)
    started = time.monotonic()

    def keep(result: dict) -> None:
        save(out, {**header, **result})

    try:
        pool.start_uas()
        result = overhead.run(
            work,
            redis_url_of(redis),
            pool.uas_uri,
            names,
            args.rounds,
            args.step_s,
            not args.no_sustained,
            keep,
            saturation_rate=args.saturation_rate,
            saturation_cpus=args.saturation_cpus,
            saturating=saturating,
        )
    finally:
        pool.stop()
        redis.stop()
    keep({**result, "loadavg_end": os.getloadavg(), "elapsed_s": time.monotonic() - started})
    render_overhead(out, args.publish)
    clean_up(work, args.keep_logs)
    return 0


def render_overhead(out: Path, publish_to: Path | None) -> None:
    results = json.loads((out / "results.json").read_text())
    head = (
        f"# Counterpoise overhead bench\n\nStarted {results['started_utc']} UTC, "
        f"{results.get('elapsed_s', 0) / 60:.1f} min, {results['cpus']} CPUs; load average "
        f"(1/5/15 min) at start {'/'.join(f'{v:.2f}' for v in results['loadavg_start'])}"
        + (
            f", at end {'/'.join(f'{v:.2f}' for v in results['loadavg_end'])}"
            if "loadavg_end" in results
            else ""
        )
        + (
            f". Counterpoise settings: {', '.join(results['settings'])}"
            if results["settings"]
            else ""
        )
        + ".\n\n"
    )
    (out / "report.md").write_text(head + overhead.render(results))
    print(f"report: {out / 'report.md'}", flush=True)
    if publish_to:
        publish_to.mkdir(parents=True, exist_ok=True)
        shutil.copy(out / "report.md", publish_to / "overhead.md")
        print(f"published to {publish_to / 'overhead.md'}", flush=True)


def redis_url_of(redis: processes.Process) -> str:
    return f"redis://127.0.0.1:{redis.argv[redis.argv.index('--port') + 1]}/0"


@dataclasses.dataclass
class Session:
    """What every part of one bench shares: the pool, Redis, where figures go, progress."""

    mode: Mode
    pool: Pool
    redis_url: str
    work: Path
    out: Path
    results: dict
    progress: Progress
    counter: drive.Counter | None = None

    def scenarios(
        self,
        contenders: list[Contender],
        wanted: list[scenarios.Scenario],
        rate: float,
        repeat: int = 0,
    ) -> None:
        """Scenario by scenario, every contender in turn (so slow changes of the machine's
        other load spread over all of them). ``rate`` is the offered load of the scenarios
        that do not set their own; ``repeat``: which pass of ``--repeat`` this is."""
        assert self.counter
        for scenario in wanted:
            scenario_rate = rate
            if scenario.load is not None:
                scenario_rate = round(scenario.load * self.pool.total_capacity, 1)
            for contender in contenders:
                if scenario.nodes > 1 and contender.native:
                    continue  # dispatcher nodes share nothing: their one node is the comparison
                self.progress.step(f"{contender.name} / {scenario.name}")
                try:
                    result = scenarios.run(
                        contender,
                        scenario,
                        self.pool,
                        self.work / f"{contender.name}-{scenario.name}-{repeat + 1}",
                        self.redis_url,
                        drive.Load(
                            scenario_rate,
                            self.mode.hold_ms,
                            time_rejections=scenario.load is not None and scenario.load > 1,
                        ),
                        self.counter,
                        self.mode.timing.warmup_s,
                        self.progress.say,
                    )
                except (processes.StartError, RuntimeError, TimeoutError, OSError) as error:
                    # One broken run must not lose the others: it is reported as broken.
                    self.progress.say(f"      BROKEN: {error}")
                    self.results["errors"].append(f"{contender.name} / {scenario.name}: {error}")
                    continue
                self.results["runs"].append(result)
                save(self.out, self.results)
                self.progress.say(summary_line(result))

    def sweep(self, contenders: list[Contender]) -> None:
        rates = [round(f * self.pool.total_capacity, 1) for f in self.mode.sweep_fractions]
        for contender in contenders:
            self.progress.step(f"{contender.name} / capacity sweep {rates} calls/s")
            self.pool.reset()
            targets, probed = self.pool.targets(), self.pool.probe_watch()
            self.ramp("sweep", contender, targets, probed, rates, self.mode.sweep_step_s)

    def overhead(self) -> None:
        """Counterpoise and alg 4 alone in front of the UAS, at the same rates."""
        # The tap reads every loopback datagram: at overhead rates it would take CPU from
        # the balancer it measures, and no share is wanted there.
        self.stop_counter()
        uas = Target("uas", self.pool.uas_uri, 0.0)
        rates = self.mode.overhead_rates
        for contender in (BY_NAME["counterpoise"], BY_NAME["ds4"]):
            self.progress.step(f"{contender.name} / overhead, UAS alone {rates}")
            self.ramp("overhead", contender, [uas], None, rates, self.mode.overhead_step_s)

    def ramp(
        self,
        part: str,
        contender: Contender,
        targets: list[Target],
        probed: Callable[[], bool] | None,
        rates: Sequence[float],
        step_s: float,
    ) -> None:
        """One ``capacity.ramp``, its result added to ``results[part]`` and saved."""
        loads = [drive.Load(rate, self.mode.hold_ms) for rate in rates]
        run_dir = self.work / f"{contender.name}-{part}"
        self.results[part].append(
            capacity.ramp(
                contender,
                targets,
                probed,
                run_dir,
                self.redis_url,
                loads,
                step_s,
                self.progress.say,
            )
        )
        save(self.out, self.results)

    def stop_counter(self) -> None:
        owner = getattr(self.counter, "__self__", None)
        if isinstance(owner, InviteTap):
            owner.stop()
        self.counter = None


def render(out: Path, publish_to: Path | None) -> None:
    """report.md and the plots from ``out/results.json``; copied to ``publish_to`` too."""
    results = json.loads((out / "results.json").read_text())
    images = plots.write_all(results, out)
    (out / "report.md").write_text(report.render(results, images))
    print(f"report: {out / 'report.md'}", flush=True)
    if publish_to:
        publish(out, images, publish_to)
        print(f"published to {publish_to}", flush=True)


def save(out: Path, results: dict) -> None:
    """Written after every run, so an interrupted bench keeps what it measured."""
    (out / "results.json").write_text(json.dumps(results, indent=1))


def invite_counter(pool: Pool) -> tuple[drive.Counter, str]:
    """The tap on the wire when this process may read the loopback interface, else the
    proxies' own counters (which understate what an overloaded proxy was sent)."""
    try:
        tap = InviteTap({ds.port: ds.name for ds in pool.proxies})
    except TapUnavailable as error:
        print(f"note: {error}; shares come from the proxies' own counters", flush=True)
        return pool.sample, "proxies' own counters (core:rcv_requests_invite)"
    tap.start()
    return tap.sample, "loopback tap (distinct INVITE Call-IDs sent to each proxy)"


def summary_line(result: dict) -> str:
    latency = result["latency_ms"]
    p99 = f"{latency['p99']:.0f}" if latency["p99"] is not None else "-"
    return (
        f"      {result['attempted']} calls, {result['failed']} failed, p99 {p99} ms, "
        f"balancer CPU {result['cpu_s']:.2f} s"
    )


def publish(out: Path, images: list[Path], target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for old in target.glob("*.png"):
        old.unlink()
    shutil.copy(out / "report.md", target / "report.md")
    for image in images:
        shutil.copy(image, target / image.name)


def stop_on_sigterm() -> None:
    """A SIGTERM (``timeout``, ``kill``) ends the bench as Ctrl-C does, through its ``finally``
    blocks, which stop the balancers, SIPp and Redis it started: by default it would leave
    them running."""

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


if __name__ == "__main__":
    stop_on_sigterm()
    sys.exit(main())
