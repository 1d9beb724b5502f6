"""``counterpoise-agent``: runs next to one SIP proxy and publishes its load to Redis.

Every ``--interval-ms`` it measures the proxy's processes from ``/proc`` (CPU used over the
interval, resident memory, how many there are), asks the proxy itself through a ``Source``
(Kamailio: ``kamcmd tm.stats``; anything else: a shell command printing a number) and writes
a ``reports.LoadReport``:

``<prefix>report:<proxy uri>``   STRING  ``reports.encode(report)`` (msgpack), ``PX --ttl-ms``:
                                         the report of an agent that stopped disappears.
``<prefix>reports``              channel ``PUBLISH``-ed the proxy URI after each write.

It never stops on its own: a proxy it cannot query gives a report with ``error`` set, and
with Redis down it goes on measuring, says so once per outage and resumes writing when Redis
answers again (``Backoff`` spaces the attempts). SIGTERM or Ctrl-C end it with status 0.

``Agent.tick(now_ms)`` is one interval's work, with the clocks injected, so tests drive it
without sleeping; ``main`` only parses options and loops.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import redis

from counterpoise import reports
from counterpoise.backoff import Backoff, Guarded
from counterpoise.reports import LoadReport
from counterpoise.settings import Settings, load_settings
from counterpoise.sipuri import InvalidProxyUri, parse_proxy_uri
from counterpoise.store import PoolStore, connect

log = logging.getLogger("counterpoise.agent")

DEFAULT_INTERVAL_MS = 1000
"""One report per second: the balancer's own sync tick publishes at the same pace, and a
report costs one SET and one PUBLISH, nothing for Redis."""

DEFAULT_TTL_MS = 3000
"""Expiry of a report: three intervals, so one late or lost write does not make a live proxy's
report vanish, while a dead agent's report is gone within 3 s."""

SOURCE_TIMEOUT_MS = 500
"""Longest a source query (one ``kamcmd`` or the ``--command``) may take before it is killed
and the report says so: half the default interval, so a hung proxy does not delay reports."""

CLK_TCK = os.sysconf("SC_CLK_TCK")
"""Units of utime/stime in ``/proc/<pid>/stat`` (clock ticks per second, 100 on Linux)."""

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
"""Units of ``/proc/<pid>/statm`` (bytes per page)."""


class SourceError(RuntimeError):
    """The proxy could not be queried; the message goes into the report's ``error``."""


# --- sources: what the proxy says about itself -------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SourceSample:
    transactions: int | None = None
    """SIP transactions in progress."""
    calls: int | None = None
    """Calls (dialogs) in progress, None if the proxy does not track them."""


class Source(Protocol):
    """Asks one proxy for its load. Another proxy type is one small class with this method;
    it raises ``SourceError`` (or anything) when the proxy does not answer."""

    def sample(self) -> SourceSample: ...


def run_bounded(command: Sequence[str] | str, timeout_s: float, shell: bool = False) -> str:
    """stdout of ``command``; ``SourceError`` if it fails or outlives ``timeout_s``, in which
    case its whole process group is killed (a shell's children too)."""
    try:
        proc = subprocess.Popen(
            command,
            shell=shell,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
    except OSError as error:
        raise SourceError(f"cannot run {command!r}: {error.strerror or error}") from None
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise SourceError(f"{_show(command)} timed out after {timeout_s * 1000:.0f} ms") from None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # leftovers of the group, if any
    if proc.returncode != 0:
        detail = (err.strip() or out.strip()).splitlines()
        raise SourceError(
            f"{_show(command)} exited {proc.returncode}: {detail[0] if detail else ''}".strip()
        )
    return out


def _show(command: Sequence[str] | str) -> str:
    return command if isinstance(command, str) else " ".join(command)


_KAMCMD_FIELD = re.compile(r"^\s*([\w.-]+):\s*(-?\d+)\s*$", re.MULTILINE)


def parse_kamcmd_counts(text: str) -> dict[str, int]:
    """``{ current: 3 waiting: 1 ... }`` as kamcmd prints a struct -> ``{"current": 3, ...}``."""
    return {name: int(value) for name, value in _KAMCMD_FIELD.findall(text)}


class KamailioSource:
    """Kamailio over its ctl socket: ``tm.stats`` gives transactions (``current`` minus those
    in the wait state after completion, ``waiting``), ``dlg.stats_active`` calls when the
    dialog module is loaded (asked once; if the command does not exist calls stay None)."""

    def __init__(
        self, ctl: str, timeout_s: float = SOURCE_TIMEOUT_MS / 1000, kamcmd: str = "kamcmd"
    ) -> None:
        self.ctl = ctl if ":" in ctl else f"unixs:{ctl}"
        self.timeout_s = timeout_s
        self.kamcmd = kamcmd
        self._dialogs: bool | None = None  # None: not tried yet

    def _query(self, *args: str) -> dict[str, int]:
        return parse_kamcmd_counts(
            run_bounded([self.kamcmd, "-s", self.ctl, *args], self.timeout_s)
        )

    def sample(self) -> SourceSample:
        stats = self._query("tm.stats")
        if "current" not in stats:
            raise SourceError("kamcmd tm.stats: no 'current' in its answer")
        transactions = max(0, stats["current"] - stats.get("waiting", 0))
        calls = None
        if self._dialogs is not False:
            try:
                calls = self._query("dlg.stats_active").get("all")
                self._dialogs = True
            except SourceError as error:
                if self._dialogs is None and "not found" in str(error):
                    self._dialogs = False  # no dialog module: do not ask again
        return SourceSample(transactions=transactions, calls=calls)


class CommandSource:
    """Any proxy: a shell command printing the transactions in progress (one number)."""

    def __init__(self, command: str, timeout_s: float = SOURCE_TIMEOUT_MS / 1000) -> None:
        self.command = command
        self.timeout_s = timeout_s

    def sample(self) -> SourceSample:
        out = run_bounded(self.command, self.timeout_s, shell=True).strip()
        try:
            value = float(out)
        except ValueError:
            raise SourceError(f"{self.command!r} printed {out[:60]!r}, not a number") from None
        if not math.isfinite(value) or value < 0:
            raise SourceError(f"{self.command!r} printed {out[:60]!r}, not a count >= 0")
        return SourceSample(transactions=round(value))


# --- the proxy's processes ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ProcStat:
    pid: int
    ppid: int
    start: int
    """Start time in clock ticks after boot: with the pid, identifies a process across reuse."""
    cpu_ticks: int
    """utime + stime."""
    rss_bytes: int


def read_stat(pid: int, proc_root: Path = Path("/proc")) -> ProcStat | None:
    """One process from /proc, or None if it is gone."""
    try:
        stat = (proc_root / str(pid) / "stat").read_text()
        statm = (proc_root / str(pid) / "statm").read_text()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may contain spaces and ')'
    fields = stat[stat.rfind(")") + 2 :].split()
    return ProcStat(
        pid=pid,
        ppid=int(fields[1]),
        start=int(fields[19]),
        cpu_ticks=int(fields[11]) + int(fields[12]),
        rss_bytes=int(statm.split()[1]) * PAGE_SIZE,
    )


class ProcessSet:
    """The proxy's processes: the pid in ``pidfile`` and all its descendants, or every process
    whose name (``/proc/<pid>/comm``, 15 characters at most) is ``name``."""

    def __init__(
        self, pidfile: Path | None = None, name: str | None = None, proc_root: Path = Path("/proc")
    ) -> None:
        if (pidfile is None) == (name is None):
            raise ValueError("give exactly one of pidfile and name")
        self.pidfile = pidfile
        self.name = name[:15] if name else None
        self.proc_root = proc_root

    def find(self) -> list[ProcStat]:
        """The processes now; ``SourceError`` if there are none."""
        every = {}
        for entry in self.proc_root.iterdir():
            if entry.name.isdigit() and (stat := read_stat(int(entry.name), self.proc_root)):
                every[stat.pid] = stat
        if self.pidfile is not None:
            try:
                root = int(self.pidfile.read_text().strip())
            except (OSError, ValueError) as error:
                raise SourceError(f"pidfile {self.pidfile}: {error}") from None
            if root not in every:
                raise SourceError(f"pid {root} from {self.pidfile} is not running")
            found, frontier = [every[root]], [root]
            while frontier:
                parent = frontier.pop()
                children = [s for s in every.values() if s.ppid == parent]
                found += children
                frontier += [s.pid for s in children]
            return found
        found = [s for pid, s in every.items() if self._comm(pid) == self.name]
        if not found:
            raise SourceError(f"no process named {self.name!r}")
        return found

    def _comm(self, pid: int) -> str | None:
        try:
            return (self.proc_root / str(pid) / "comm").read_text().strip()
        except OSError:
            return None


def allowed_cores(pid: int) -> int:
    """CPUs the process may run on (its affinity mask); a cgroup quota is not seen."""
    try:
        return len(os.sched_getaffinity(pid)) or 1
    except OSError:
        return os.cpu_count() or 1


class CpuMeter:
    """CPU use of a set of processes between two calls of ``measure``."""

    def __init__(self) -> None:
        self._ticks: dict[tuple[int, int], int] = {}
        self._at_s: float | None = None

    def measure(self, stats: Sequence[ProcStat], mono_s: float) -> tuple[float | None, float]:
        """(percent of one core, cores) since the previous call; percent is None on the first
        call. Only processes seen both times count: one that started in between has no
        baseline, one that ended took its last ticks with it."""
        ticks = {(s.pid, s.start): s.cpu_ticks for s in stats}
        percent = None
        if self._at_s is not None and mono_s > self._at_s:
            used = sum(max(0, t - self._ticks[k]) for k, t in ticks.items() if k in self._ticks)
            percent = 100.0 * used / CLK_TCK / (mono_s - self._at_s)
        self._ticks, self._at_s = ticks, mono_s
        cores = allowed_cores(stats[0].pid) if stats else os.cpu_count() or 1
        return percent, cores


# --- the agent -----------------------------------------------------------------------------------


class Agent:
    def __init__(
        self,
        proxy: str,
        client: redis.Redis,
        processes: ProcessSet,
        source: Source | None = None,
        capacity: float | None = None,
        ttl_ms: int = DEFAULT_TTL_MS,
        prefix: str = "cp:",
        backoff: Backoff | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.proxy = proxy
        self.store = PoolStore(client, prefix)
        self.processes = processes
        self.source = source
        self.capacity = capacity
        self.ttl_ms = ttl_ms
        self.key = self.store.keys.report(proxy)
        self.redis = Guarded(
            backoff or Backoff.from_settings(Settings()),
            (redis.RedisError, OSError),
            log.warning,
            "Redis",
            "measuring on, will retry",
        )
        self.monotonic = monotonic
        self.cpu = CpuMeter()
        self.seq = 0
        self.published = 0
        """Reports written to Redis so far."""

    def measure(self, now_ms: int) -> LoadReport:
        errors = []
        stats: list[ProcStat] = []
        try:
            stats = self.processes.find()
        except SourceError as error:
            errors.append(str(error))
        percent, cores = self.cpu.measure(stats, self.monotonic())
        if not stats:
            percent = None
        sample = SourceSample()
        if self.source is not None:
            try:
                sample = self.source.sample()
            except Exception as error:  # any failure of the proxy's side is reported, not fatal
                errors.append(str(error) or type(error).__name__)
        report = LoadReport(
            proxy=self.proxy,
            seq=self.seq,
            timestamp_ms=now_ms,
            cpu_utilisation=None if percent is None else min(1.0, percent / 100 / cores),
            cpu_percent=percent,
            transactions=sample.transactions,
            calls=sample.calls,
            capacity=self.capacity,
            processes=len(stats),
            rss_bytes=sum(s.rss_bytes for s in stats),
            error="; ".join(errors) or None,
        )
        self.seq += 1
        return report

    def publish(self, report: LoadReport, now_ms: int) -> bool:
        """Write ``report``; False (and no exception) when Redis is down or backing off."""

        def write() -> None:
            self.store.put_report(self.proxy, reports.encode(report), self.ttl_ms)

        if not self.redis.call(now_ms, write):
            return False
        self.published += 1
        return True

    @property
    def redis_down(self) -> bool:
        """True from a failed write until the next successful one."""
        return self.redis.down

    def tick(self, now_ms: int) -> LoadReport:
        """Measure and publish once; never raises for a dead proxy or a dead Redis."""
        report = self.measure(now_ms)
        self.publish(report, now_ms)
        return report


def run_loop(
    agent: Agent,
    interval_ms: int,
    stop: threading.Event,
    wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    monotonic: Callable[[], float] = time.monotonic,
) -> None:
    """Tick every ``interval_ms`` (on a fixed schedule; a late tick does not shift the next
    ones, missed ones are skipped) until ``stop`` is set."""
    interval_s = interval_ms / 1000
    next_s = monotonic()
    while not stop.is_set():
        agent.tick(wall_ms())
        next_s += interval_s
        now = monotonic()
        if next_s < now:
            next_s = now
        stop.wait(next_s - now)


# --- command line ------------------------------------------------------------------------------


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="counterpoise-agent", description="Publish one SIP proxy's load to Redis."
    )
    parser.add_argument("--proxy", required=True, help="the proxy's URI as in the pool")
    parser.add_argument(
        "--redis",
        default=os.environ.get("COUNTERPOISE_REDIS_URL", settings.redis_url),
        help="Redis URL (default: COUNTERPOISE_REDIS_URL, else the embedded Redis)",
    )
    parser.add_argument("--interval-ms", type=int, default=DEFAULT_INTERVAL_MS)
    parser.add_argument("--ttl-ms", type=int, default=DEFAULT_TTL_MS)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--pidfile", type=Path, help="pid file of the proxy's main process")
    which.add_argument("--process-name", help="every process of this name (e.g. kamailio)")
    parser.add_argument("--source", choices=("none", "kamailio", "command"), default="none")
    parser.add_argument("--ctl", help="Kamailio ctl socket, unixs:/path (--source kamailio)")
    parser.add_argument("--command", help="shell command printing transactions in progress")
    parser.add_argument(
        "--capacity",
        type=float,
        help="transactions the proxy can work on at once (e.g. its SIP workers)",
    )
    parser.add_argument("--source-timeout-ms", type=int, default=SOURCE_TIMEOUT_MS)
    return parser


def make_source(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Source | None:
    timeout_s = args.source_timeout_ms / 1000
    if args.source == "kamailio":
        if not args.ctl:
            parser.error("--source kamailio needs --ctl unixs:/path")
        return KamailioSource(args.ctl, timeout_s)
    if args.source == "command":
        if not args.command:
            parser.error("--source command needs --command 'CMD'")
        return CommandSource(args.command, timeout_s)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(stream=sys.stderr, format="counterpoise-agent: %(message)s")
    try:
        settings = load_settings()
    except ValueError as error:
        print(f"counterpoise-agent: {error}", file=sys.stderr)
        return 1
    parser = build_parser(settings)
    args = parser.parse_args(argv)
    try:
        proxy = parse_proxy_uri(args.proxy)
    except InvalidProxyUri as error:
        parser.error(str(error))
    if args.interval_ms <= 0 or args.ttl_ms <= args.interval_ms:
        parser.error("need 0 < --interval-ms < --ttl-ms (a report must outlive the interval)")
    if args.capacity is not None and not (math.isfinite(args.capacity) and args.capacity > 0):
        parser.error("--capacity must be > 0")
    source = make_source(args, parser)
    agent = Agent(
        proxy,
        connect(args.redis, settings.redis_timeout_ms),
        ProcessSet(pidfile=args.pidfile, name=args.process_name),
        source=source,
        capacity=args.capacity,
        ttl_ms=args.ttl_ms,
        prefix=settings.key_prefix,
        backoff=Backoff.from_settings(settings),
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    run_loop(agent, args.interval_ms, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
