"""What a change saves, measured side by side (``python -m bench.paired``): two contenders
(typically Counterpoise from the tree of the commit before, ``--compare``, and this one) each
relay ``--rate`` calls/s to a UAS of their own at the same time, each with its own Redis, for
``--trials`` trials, each started fresh. CPU per call as the overhead bench counts it (every
process a contender needs, its Redis included).

The overhead bench runs one contender at a time, and this machine's speed drifts between
steps by more than a small saving: its medians over five rounds can rank two versions either
way. Here both run through the same seconds of the same machine, so the drift moves both
alike and each trial's ratio of the two keeps the difference alone. Each runs beside the
other's load, which is not how a host runs one balancer: the ratio is the figure, not the CPU
per call.

    .venv/bin/python -m bench.paired --compare before=TREE --contenders before,counterpoise
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from bench import drive, overhead
from bench.__main__ import redis_url_of, stop_on_sigterm
from bench.contenders import BY_NAME, Contender, add_compare_option, compared
from bench.pool import Pool, Target
from counterpoise import processes

TRIALS = 6
SECONDS = 8.0
"""Of calls measured per trial, after the overhead bench's warm-up."""


def ratios(first: Sequence[float], second: Sequence[float]) -> list[float]:
    """Each trial's CPU per call of the second contender over the first's."""
    return [b / a for a, b in zip(first, second, strict=True)]


def summary(names: tuple[str, str], first: Sequence[float], second: Sequence[float]) -> str:
    each = ratios(first, second)
    return (
        f"{names[1]} / {names[0]}, CPU per call: median {statistics.median(each):.3f} "
        f"(trials {', '.join(f'{r:.3f}' for r in each)})"
    )


def trial(
    contenders: Sequence[Contender],
    pools: Sequence[Pool],
    redis_urls: Sequence[str],
    work: Path,
    rate: float,
    seconds: float,
    dialled_users: bool = False,
) -> list[float]:
    """One trial: both started fresh, warmed up and measured at once; each one's CPU per call."""
    measured: dict[int, drive.Measurement] = {}
    failures: list[BaseException] = []
    running = []
    try:
        for i, contender in enumerate(contenders):
            run_dir = work / contender.name
            run_dir.mkdir(parents=True)
            target = Target("uas", pools[i].uas_uri, 0.0)
            running.append((contender.start([target], run_dir, redis_urls[i]), run_dir))

        def one(i: int) -> None:
            try:
                balancer, run_dir = running[i]
                overhead.warm_up(balancer, run_dir)
                load = drive.Load(rate, overhead.HOLD_MS, dialled_users=dialled_users)
                measured[i] = drive.measure(balancer, None, None, run_dir / "load", load, seconds)
            except BaseException as error:  # re-raised below, in the main thread
                failures.append(error)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(running))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for balancer, _ in running:
            balancer.stop()
    if failures:
        raise failures[0]
    for i, contender in enumerate(contenders):
        if measured[i].sipp.failed:
            print(f"  {contender.name}: {measured[i].sipp.failed} calls failed", flush=True)
    return [measured[i].cpu_per_call_ms for i in range(len(contenders))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.paired", description=__doc__)
    parser.add_argument("--contenders", required=True, help="two, comma-separated")
    add_compare_option(parser)
    parser.add_argument("--rate", type=float, default=300.0, help="calls/s each (300)")
    parser.add_argument("--trials", type=int, default=TRIALS, help=f"({TRIALS})")
    parser.add_argument("--seconds", type=float, default=SECONDS, help=f"per trial ({SECONDS:g})")
    parser.add_argument(
        "--dialled-users",
        action="store_true",
        help="each call dials a user of its own, as a trunk's calls do (every location "
        "lookup misses the cache); else every call dials the same user",
    )
    args = parser.parse_args(argv)
    compared(args.compare)
    names = tuple(args.contenders.split(","))
    if len(names) != 2 or any(name not in BY_NAME for name in names):
        parser.error(f"--contenders: two of {', '.join(BY_NAME)}")
    contenders = [BY_NAME[name] for name in names]
    work = Path(tempfile.mkdtemp(prefix="paired-"))
    redises = [processes.start_redis(processes.free_port(), work / f"redis{i}") for i in (0, 1)]
    pools = [Pool(work / f"uas{i}") for i in (0, 1)]
    cpu: tuple[list[float], list[float]] = ([], [])
    try:
        for pool in pools:
            pool.start_uas()
        urls = [redis_url_of(redis) for redis in redises]
        for index in range(args.trials):
            first, second = trial(
                contenders,
                pools,
                urls,
                work / f"trial{index + 1}",
                args.rate,
                args.seconds,
                args.dialled_users,
            )
            cpu[0].append(first)
            cpu[1].append(second)
            print(
                f"trial {index + 1}: {names[0]} {first:.3f}, {names[1]} {second:.3f} ms CPU a "
                f"call ({second / first:.3f})",
                flush=True,
            )
    finally:
        for pool in pools:
            pool.stop()
        for redis in redises:
            redis.stop()
    print(f"{args.rate:g} calls/s each: {summary((names[0], names[1]), *cpu)}  ({work})")
    return 0


if __name__ == "__main__":
    stop_on_sigterm()
    raise SystemExit(main())
