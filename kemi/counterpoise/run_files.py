"""Where a balancer keeps its run-time files: its run folder and Kamailio's control sockets
in it. Light on purpose: keepalived's health check finds the JSON-RPC socket here every
second, without importing what starts processes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from counterpoise.core.settings import Settings


def default_run_dir() -> Path:
    """``/run/counterpoise`` for root (systemd's RuntimeDirectory), else the user's runtime
    folder."""
    if os.geteuid() == 0:
        return Path("/run/counterpoise")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return Path(runtime) / "counterpoise" if runtime else Path(f"/tmp/counterpoise-{os.getuid()}")


def node_run_dir(settings: Settings) -> Path:
    """The node's run folder: ``run_dir`` when set, else ``default_run_dir()``."""
    return Path(settings.node.run_dir) if settings.node.run_dir else default_run_dir()


def ctl_socket(run_dir: Path) -> Path:
    """The balancer's control socket (``kamcmd -s unixs:PATH``) in its run folder."""
    return run_dir / "kamailio_ctl"


def rpc_socket(run_dir: Path) -> Path:
    """The balancer's JSON-RPC socket (``control.call``) in its run folder."""
    return run_dir / "kamailio_rpc.sock"
