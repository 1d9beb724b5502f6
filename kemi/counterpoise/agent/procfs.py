"""CPU, memory and count of a proxy's processes, read from ``/proc``."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from counterpoise.agent.sources import SourceError

CLK_TCK = os.sysconf("SC_CLK_TCK")
"""Units of utime/stime in ``/proc/<pid>/stat`` (clock ticks per second, 100 on Linux)."""


PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
"""Units of ``/proc/<pid>/statm`` (bytes per page)."""


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
