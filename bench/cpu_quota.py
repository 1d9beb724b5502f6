"""A smaller host for the balancer: its processes confined to a share of the CPUs by a
CPU-quota control group (cgroup v2 ``cpu.max``, or v1 ``cpu.cfs_quota_us``), while SIPp's
caller and callee keep the rest. On the bench's 2 cores SIPp itself runs out of CPU before
native dispatcher does, so an unconfined saturation run measures SIPp; confined, the
balancer is what saturates (the quota throttles it: it sleeps, it does not spin).
Root only, as the pair bench."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000
"""The scheduler's quota period, the kernel's default: a confined process runs at most
``cpus * PERIOD_US`` µs in each."""
NAME = "counterpoise-bench"


class QuotaError(RuntimeError):
    """No CPU controller to confine with (not root, or no cgroup mounted)."""


def _hierarchy() -> tuple[Path, str] | None:
    """The CPU controller's root and its version ("v2" or "v1"); None when there is none."""
    controllers = CGROUP_ROOT / "cgroup.controllers"
    if controllers.exists() and "cpu" in controllers.read_text().split():
        return CGROUP_ROOT, "v2"
    if (CGROUP_ROOT / "cpu" / "cpu.cfs_quota_us").exists():
        return CGROUP_ROOT / "cpu", "v1"
    return None


@contextlib.contextmanager
def confined(pids: Iterable[int], cpus: float) -> Iterator[None]:
    """Run the ``pids`` (and their threads) with at most ``cpus`` CPUs between them inside
    the block; back in the root group after it, whatever happened."""
    found = _hierarchy()
    if found is None:
        raise QuotaError("no cgroup CPU controller: confining the balancer needs one (and root)")
    root, version = found
    group = root / f"{NAME}-{os.getpid()}"
    quota_us = max(1000, round(cpus * PERIOD_US))
    try:
        if version == "v2":
            subtree = root / "cgroup.subtree_control"
            if "cpu" not in subtree.read_text().split():
                subtree.write_text("+cpu")
        group.mkdir(exist_ok=True)
        if version == "v2":
            (group / "cpu.max").write_text(f"{quota_us} {PERIOD_US}")
        else:
            (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (group / "cpu.cfs_quota_us").write_text(str(quota_us))
    except OSError as error:
        raise QuotaError(f"cannot make the CPU-quota group {group}: {error}") from error
    moved: list[int] = []
    try:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, OSError):  # a process that ended
                (group / "cgroup.procs").write_text(str(pid))
                moved.append(pid)
        yield
    finally:
        for pid in moved:
            with contextlib.suppress(ProcessLookupError, OSError):
                (root / "cgroup.procs").write_text(str(pid))
        with contextlib.suppress(OSError):
            group.rmdir()
