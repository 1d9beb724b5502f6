"""The suite's own servers leave nothing running when one of their processes cannot start:
a process left over holds its port and slows every later test."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from counterpoise import processes

from ..redis_servers import SentinelSet


def running_in(folder: Path) -> list[psutil.Process]:
    """The processes whose command line names ``folder``."""
    return [
        proc
        for proc in psutil.process_iter(["cmdline"])
        if any(str(folder) in arg for arg in proc.info["cmdline"] or [])
    ]


@pytest.mark.parametrize(
    ("sentinel_command", "error"),
    [("no-such-redis-sentinel", "not installed"), ("false", "exited at start-up")],
)
def test_a_sentinel_that_cannot_start_leaves_no_redis_running(
    tmp_path: Path, sentinel_command: str, error: str
) -> None:
    folder = tmp_path / "sentinel"
    with pytest.raises(processes.StartError, match=error):
        SentinelSet(folder, sentinel_command)
    assert "Ready to accept connections" in (folder / "replica" / "redis.log").read_text()
    assert running_in(folder) == []
