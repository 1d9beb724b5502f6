"""CPU, memory and count of a proxy's processes, measured with psutil."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import psutil

from counterpoise.agent.sources import SourceError


@dataclasses.dataclass(frozen=True)
class ProcStat:
    pid: int
    start_s: float
    """Creation time (seconds since the epoch): with the pid, identifies a process across
    reuse."""
    cpu_s: float
    """User plus system CPU time so far."""
    rss_bytes: int


def _stat(proc: psutil.Process) -> ProcStat | None:
    """One process's figures, or None if it ended meanwhile or cannot be read."""
    try:
        with proc.oneshot():
            times = proc.cpu_times()
            return ProcStat(
                pid=proc.pid,
                start_s=proc.create_time(),
                cpu_s=times.user + times.system,
                rss_bytes=proc.memory_info().rss,
            )
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


class ProcessSet:
    """The proxy's processes: the pid in ``pidfile`` and all its descendants, or every process
    whose name is ``name`` (the kernel's name, 15 characters at most)."""

    def __init__(self, pidfile: Path | None = None, name: str | None = None) -> None:
        if (pidfile is None) == (name is None):
            raise ValueError("give exactly one of pidfile and name")
        self.pidfile = pidfile
        self.name = name[:15] if name else None

    def find(self) -> list[ProcStat]:
        """The processes now; ``SourceError`` if there are none."""
        if self.pidfile is not None:
            found = _tree(self.pidfile)
        else:
            found = [p for p in psutil.process_iter(["name"]) if p.info["name"] == self.name]
            if not found:
                raise SourceError(f"no process named {self.name!r}")
        return [stat for stat in map(_stat, found) if stat is not None]


def _tree(pidfile: Path) -> list[psutil.Process]:
    """The process named in ``pidfile`` and its descendants."""
    try:
        root = int(pidfile.read_text().strip())
    except (OSError, ValueError) as error:
        raise SourceError(f"pidfile {pidfile}: {error}") from None
    try:
        main = psutil.Process(root)
        return [main, *main.children(recursive=True)]
    except psutil.NoSuchProcess:
        raise SourceError(f"pid {root} from {pidfile} is not running") from None


def allowed_cores(pid: int) -> int:
    """CPUs the process may run on (its affinity mask); a cgroup quota is not seen."""
    try:
        return len(psutil.Process(pid).cpu_affinity() or []) or 1
    except (psutil.Error, AttributeError):
        return os.cpu_count() or 1


class CpuMeter:
    """CPU use of a set of processes between two calls of ``measure``."""

    def __init__(self) -> None:
        self._cpu_s: dict[tuple[int, float], float] = {}
        self._at_s: float | None = None

    def measure(self, stats: Sequence[ProcStat], mono_s: float) -> tuple[float | None, float]:
        """(percent of one core, cores) since the previous call; percent is None on the first
        call. Only processes seen both times count: one that started in between has no
        baseline, one that ended took its last CPU time with it."""
        cpu_s = {(s.pid, s.start_s): s.cpu_s for s in stats}
        percent = None
        if self._at_s is not None and mono_s > self._at_s:
            used = sum(max(0.0, t - self._cpu_s[k]) for k, t in cpu_s.items() if k in self._cpu_s)
            percent = 100.0 * used / (mono_s - self._at_s)
        self._cpu_s, self._at_s = cpu_s, mono_s
        cores = allowed_cores(stats[0].pid) if stats else os.cpu_count() or 1
        return percent, cores
