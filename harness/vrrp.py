"""keepalived with the shipped configuration (``deploy/keepalived/``), on a host of a
``harness.netns`` LAN.

The test does not write a keepalived configuration of its own: it takes
``deploy/keepalived/keepalived.conf``, sets its parameter lines (the addresses, the health
check's command) to the LAN's, and points its includes at the shipped files, so what runs is
what an operator deploys.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from counterpoise import processes
from harness import REPO
from harness.netns import Host

KEEPALIVED_DIR = REPO / "deploy" / "keepalived"
TIMINGS = {"1s": "timing.conf", "subsecond": "timing-subsecond.conf"}
"""The advertisement timings shipped, by the name the test and the benchmark give them."""

ADVERT_INTERVAL_S = {"1s": 1.0, "subsecond": 0.2}
"""Each timing's ``$ADVERT_INT`` (``tests/e2e/test_node_pair.py`` reads it in the file)."""


def master_down_s(timing: str, priority: int) -> float:
    """How long a backup of ``priority`` waits without an advertisement before it takes the
    address (RFC 5798's Master_Down_Interval: three intervals plus the skew time)."""
    advert_s = ADVERT_INTERVAL_S[timing]
    return 3 * advert_s + (256 - priority) * advert_s / 256


def render(run_dir: Path, parameters: dict[str, str], timing: str = "1s") -> Path:
    """``keepalived.conf`` with the ``$NAME=`` lines of ``parameters`` replaced (each must
    exist) and its includes made absolute (``timing``: one of ``TIMINGS``)."""
    text = (KEEPALIVED_DIR / "keepalived.conf").read_text()
    for name, value in parameters.items():
        line = re.compile(rf"^\${name}=.*$", re.MULTILINE)
        if not line.search(text):
            raise ValueError(f"keepalived.conf defines no ${name}")
        text = line.sub(lambda _, n=name, v=value: f"${n}={v}", text)
    includes = {
        "timing.conf": KEEPALIVED_DIR / TIMINGS[timing],
        "vrrp.conf": KEEPALIVED_DIR / "vrrp.conf",
    }
    for name, path in includes.items():
        text = text.replace(f"include {name}\n", f"include {path}\n")
    run_dir.mkdir(parents=True, exist_ok=True)
    config = run_dir / f"keepalived-{timing}.conf"
    config.write_text(text)
    return config


def config_test(host: Host, config: Path, node_id: str) -> subprocess.CompletedProcess:
    """``keepalived --config-test`` where the config's interface exists: in ``host``."""
    return subprocess.run(
        host.argv("keepalived", "--config-test", "-f", str(config), "-i", node_id),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def start(host: Host, config: Path, node_id: str, run_dir: Path) -> processes.Process:
    """keepalived (VRRP only, in the foreground) in ``host`` as ``node_id``, with pid files of
    its own so two run on one machine."""
    run_dir.mkdir(parents=True, exist_ok=True)
    argv = host.argv(
        "keepalived", "--dont-fork", "--log-console", "--log-detail", "--no-syslog", "--vrrp",
        "-f", str(config), "-i", node_id,
        "-p", str(run_dir / "keepalived.pid"), "-r", str(run_dir / "vrrp.pid"),
    )  # fmt: skip
    proc = processes.Process(f"keepalived {node_id}", argv, run_dir / "keepalived.log")
    proc.ensure_started(
        lambda: "Startup complete" in log_text(proc),
        10.0,
        f"keepalived {node_id} to start",
    )
    return proc


def log_text(proc: processes.Process) -> str:
    log = proc.log_path
    return log.read_text(errors="replace") if log and log.exists() else ""
