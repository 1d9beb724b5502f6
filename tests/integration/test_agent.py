"""counterpoise-agent's command source and command line, without Kamailio (the agent against
a real downstream Kamailio is in ``tests/e2e/test_agent.py``)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from counterpoise.agent.sources import CommandSource, SourceError


def test_command_source() -> None:
    assert CommandSource("echo 7").sample().transactions == 7
    assert CommandSource("printf ' 3.0\\n'").sample().transactions == 3
    with pytest.raises(SourceError, match="not a number"):
        CommandSource("echo busy").sample()
    with pytest.raises(SourceError, match="not a count"):
        CommandSource("echo -2").sample()
    with pytest.raises(SourceError, match="exited 3"):
        CommandSource("echo oops >&2; exit 3").sample()
    started = time.monotonic()
    with pytest.raises(SourceError, match="timed out after 200 ms"):
        CommandSource("sleep 5; echo 1", timeout_s=0.2).sample()  # the shell's child dies too
    assert time.monotonic() - started < 1.0


def test_command_line_refuses_bad_options() -> None:
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "counterpoise.agent", *args],
            capture_output=True,
            text=True,
            timeout=10,
        )

    base = ("--proxy", "sip:127.0.0.1:5071", "--process-name", "kamailio")
    assert "not a proxy SIP URI" in run("--proxy", "x", "--process-name", "k").stderr
    assert "--ttl-ms" in run(*base, "--ttl-ms", "500").stderr
    assert run(*base, "--capacity", "0").returncode == 2
    assert run("--proxy", "sip:a").returncode == 2  # neither --pidfile nor --process-name
