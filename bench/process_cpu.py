"""Where a contender's CPU per call goes, process by process (``python -m bench.process_cpu``).

The overhead bench sums every process a balancer needs; this splits that sum, for one rate:
each Kamailio process (named by ``kamcmd core.psx``: the SIP workers, the timer processes)
and Redis, in ms of CPU per call from ``/proc``, as the overhead bench counts it. With
``--perf``, ``perf record`` samples the same processes (``cpu-clock``, ``PERF_HZ``) and each
process's CPU is split further by the object it ran in: the Python interpreter
(``libpython``), Kamailio's core, the kernel, and the rest (Kamailio's modules and the
libraries, the C library among them). One run of each
contender, one after the other: a diagnosis, not a figure to compare across runs (the
overhead bench's rounds are). Each contender first takes ``--settle-s`` of calls at the
measured rate, not measured: the first seconds at a higher rate touch memory no call touched
before (about 7 minor page faults a call on this machine, for every contender, native alg 4
too, against under 1 once settled), a cost of the step and not of the calls. Each
contender's heading gives its Kamailio processes' minor page faults a call, to see it.
"""

from __future__ import annotations

import argparse
import collections
import signal
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

from harness import testbed

from bench import drive, overhead
from bench.__main__ import redis_url_of, stop_on_sigterm
from bench.contenders import (
    BY_NAME,
    CLOCK_TICKS,
    Running,
    add_compare_option,
    compared,
    cpu_ticks,
    session_stats,
)
from bench.pool import Pool, Target
from counterpoise import processes

SETTLE_S = 6.0
"""Seconds of calls at the measured rate before the measured window (``--settle-s``)."""
PERF_HZ = 2000
"""Samples per second of CPU time: each sample stands for 0.5 ms of it."""
GROUPS = (("libpython", "Python"), ("kamailio", "Kamailio core"), ("kernel", "kernel"))
"""Objects a process's samples are grouped by (by name); the rest is "modules and libraries"."""
OTHER = "modules and libraries"
COLUMNS = [label for _, label in GROUPS] + [OTHER]
"""The perf columns of the report, in order."""


def process_names(run_dir: Path) -> dict[int, str]:
    """Each Kamailio process's description from ``core.psx`` on the contender's control
    socket; empty when it has none answering."""
    names: dict[int, str] = {}
    for socket in sorted(run_dir.rglob("*ctl*")):
        if not socket.is_socket():
            continue
        try:
            listing = testbed.kamcmd(socket, "core.psx", timeout_s=2.0)
        except (RuntimeError, subprocess.TimeoutExpired):
            continue
        pid = None
        for line in listing.splitlines():
            key, _, value = line.strip().partition(":")
            if key == "PID":
                pid = int(value)
            elif key == "DSC" and pid is not None:
                names[pid] = value.strip()
        return names
    return names


def snapshot(running: Running) -> tuple[dict[int, int], int]:
    """From one reading of ``/proc``: the user plus system clock ticks so far of each of the
    contender's Kamailio processes, and their minor page faults so far, summed (field 10 of
    proc(5): a page touched for the first time)."""
    stats = list(session_stats(running.proc.pid))
    ticks = {pid: cpu_ticks(fields) for pid, fields in stats}
    return ticks, sum(int(fields[7]) for _, fields in stats)


def perf_split(data: Path) -> dict[int, collections.Counter[str]]:
    """Samples per process and object group (``GROUPS``) of a ``perf record`` file."""
    report = subprocess.run(
        ["perf", "report", "-i", str(data), "--sort", "pid,dso", "-g", "none", "-n", "--stdio"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    split: dict[int, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in report.splitlines():
        fields = line.split()
        if len(fields) < 4 or not fields[0].endswith("%") or ":" not in fields[2]:
            continue
        pid, dso = int(fields[2].partition(":")[0]), " ".join(fields[3:])
        group = next((label for name, label in GROUPS if name in dso), OTHER)
        split[pid][group] += int(fields[1])
    return split


def measure(
    name: str,
    pool: Pool,
    redis: processes.Process,
    rate: float,
    seconds: float,
    perf: bool,
    work: Path,
    settle_s: float = SETTLE_S,
) -> list[str]:
    """The report's lines for one contender."""
    run_dir = work / name
    run_dir.mkdir()
    running = BY_NAME[name].start([Target("uas", pool.uas_uri, 0.0)], run_dir, redis_url_of(redis))
    try:
        overhead.warm_up(running, run_dir)
        load = drive.Load(rate, overhead.HOLD_MS)  # calls as the overhead bench makes them
        if settle_s > 0:
            drive.measure(running, None, None, run_dir / "settle", load, settle_s)
        names = process_names(run_dir)
        before, faults_before = snapshot(running)
        data = work / f"{name}.perf"
        recorder = _perf_record(data, before) if perf else None
        try:
            result = drive.measure(running, None, None, run_dir / "rate", load, seconds)
        finally:
            if recorder is not None:  # stopped whatever the calls did: perf writes its file
                recorder.send_signal(signal.SIGINT)
                recorder.wait()
        after, faults_after = snapshot(running)
    finally:
        running.stop()
    calls = result.sipp.attempted or 1
    total_ms = result.cpu_per_call_ms
    lines = [
        f"\n### {name}: {rate:g} calls/s, {calls} calls ({result.sipp.failed} failed), "
        f"{total_ms:.3f} ms CPU a call, "
        f"{(faults_after - faults_before) / calls:.2f} minor page faults a call\n",
        "| process | ms CPU a call |" + ("".join(f" {c} |" for c in COLUMNS) if perf else ""),
        "|---|---|" + ("---|" * len(COLUMNS) if perf else ""),
    ]
    split = perf_split(data) if perf else {}
    per_call = {
        pid: (after[pid] - before.get(pid, 0)) / CLOCK_TICKS * 1000 / calls for pid in after
    }
    for pid, ms in sorted(per_call.items(), key=lambda item: -item[1]):
        if ms <= 0:
            continue
        row = f"| {names.get(pid, pid)} | {ms:.3f} |"
        if perf:
            samples = split.get(pid, collections.Counter())
            row += "".join(f" {samples[c] / PERF_HZ * 1000 / calls:.3f} |" for c in COLUMNS)
        lines.append(row)
    lines.append(
        f"| Redis | {1000 * result.store_cpu_s / calls:.3f} |"
        + (" |" * len(COLUMNS) if perf else "")
    )
    return lines


def _perf_record(data: Path, pids: Iterable[int]) -> subprocess.Popen[bytes]:
    """``perf record`` of ``pids`` into ``data``, until it is sent SIGINT."""
    argv = ["perf", "record", "-e", "cpu-clock", "-F", str(PERF_HZ), "-o", str(data)]
    return subprocess.Popen(
        [*argv, "-p", ",".join(map(str, pids))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.process_cpu", description=__doc__)
    parser.add_argument("--contenders", default="counterpoise,seal-py2-tlsf")
    parser.add_argument("--rate", type=float, default=300.0, help="calls/s (300)")
    parser.add_argument("--seconds", type=float, default=10.0, help="of calls measured (10)")
    parser.add_argument("--perf", action="store_true", help="split each process with perf")
    parser.add_argument(
        "--settle-s", type=float, default=SETTLE_S, help=f"calls first, unmeasured ({SETTLE_S:g})"
    )
    add_compare_option(parser)
    args = parser.parse_args(argv)
    compared(args.compare)
    work = Path(tempfile.mkdtemp(prefix="process-cpu-"))
    redis = processes.start_redis(processes.free_port(), work / "redis")
    pool = Pool(work)
    try:
        pool.start_uas()
        for name in args.contenders.split(","):
            lines = measure(
                name, pool, redis, args.rate, args.seconds, args.perf, work, args.settle_s
            )
            print("\n".join(lines))
    finally:
        pool.stop()
        redis.stop()
    print(f"\nms CPU a call; perf's columns: its samples at {PERF_HZ}/s of CPU time. ({work})")
    return 0


if __name__ == "__main__":
    stop_on_sigterm()
    raise SystemExit(main())
