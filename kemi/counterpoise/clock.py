"""The one place that reads the clocks. Everything else is given a time, or a function
returning one, so that tests can run it on a fake clock."""

from __future__ import annotations

import time


def monotonic_ms() -> int:
    """Milliseconds of a clock that never jumps: durations, deadlines, ages."""
    return time.monotonic_ns() // 1_000_000


def wall_ms() -> int:
    """Epoch milliseconds: what Redis records show and other hosts can compare."""
    return time.time_ns() // 1_000_000


def monotonic_s() -> float:
    """Seconds of the monotonic clock at full resolution: short durations (a sync tick)."""
    return time.monotonic()


def perf_ns() -> int:
    """Nanoseconds of the highest-resolution monotonic clock: time spent in a route."""
    return time.perf_counter_ns()
