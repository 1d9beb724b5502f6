"""The one module of ``kemi/`` that touches the clocks, to read them or to sleep on them
(``tests/unit/test_layers.py`` holds every other module to it). Everything else calls these,
or is given a time or one of these functions, so that tests can run it on a fake clock."""

from __future__ import annotations

import time


def monotonic_ms() -> int:
    """Milliseconds of a clock that never jumps: durations, deadlines, ages."""
    return time.monotonic_ns() // 1_000_000


def wall_ms() -> int:
    """Epoch milliseconds: what Redis records show and other hosts can compare."""
    return time.time_ns() // 1_000_000


SCRIPT_CYCLE_MS = 1_000_000_000
"""The script clock's cycle (11.6 days): its values fit the signed 32-bit integers of
Kamailio's script arithmetic, which ``$TV(sn) * 1000`` would overflow."""


def script_ms() -> int:
    """The clock a native route reads (``route[CP_NOW]`` of ``embed/counterpoise.cfg``: the
    wall clock, ``$TV(sn)`` and ``$TV(un)``, in ms modulo ``SCRIPT_CYCLE_MS``; Kamailio's
    script has no monotonic one): what Python stamps for a native route to time against."""
    return wall_ms() % SCRIPT_CYCLE_MS


def monotonic_s() -> float:
    """Seconds of the monotonic clock at full resolution: short durations (a sync tick)."""
    return time.monotonic()


def monotonic_ns() -> int:
    """Nanoseconds of the monotonic clock: an order within this host (a queue's keys), or a
    value that differs between processes started apart (a seed)."""
    return time.monotonic_ns()


def perf_ns() -> int:
    """Nanoseconds of the highest-resolution monotonic clock: time spent in a route."""
    return time.perf_counter_ns()


def local_time_of_day() -> str:
    """The local wall time as ``HH:MM:SS``: what an operator reads on a live table."""
    return time.strftime("%H:%M:%S")


def sleep_s(seconds: float) -> None:
    """Wait ``seconds`` on the monotonic clock."""
    time.sleep(seconds)
