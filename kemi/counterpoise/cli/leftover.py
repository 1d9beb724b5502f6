"""A Kamailio left running by an earlier ``counterpoise up`` in the same run folder.

``up`` stops its Kamailio when it ends, but an ``up`` killed outright (SIGKILL, the OOM
killer) cannot, and its Kamailio, in a session of its own, keeps the SIP port and the run
folder. Its pid file in the run folder is how the next ``up`` finds it.
"""

from __future__ import annotations

from pathlib import Path

import psutil

from counterpoise import processes
from counterpoise.cli.common import CliError


def clear_leftover(run_dir: Path) -> None:
    """Stop the Kamailio of an earlier ``up`` in ``run_dir`` that outlived it, or remove its
    stale pid file; CliError if that ``up`` still runs."""
    pid_file = processes.pid_file(run_dir)
    try:
        text = pid_file.read_text().strip()
    except FileNotFoundError:
        return
    kamailio = _kamailio(int(text) if text.isdigit() else 0, pid_file)
    if kamailio is None:
        print(f"removing the stale pid file {pid_file} (pid {text} is no Kamailio of it)")
        pid_file.unlink(missing_ok=True)
        return
    owner = _owning_up(kamailio)
    if owner is not None:
        raise CliError(
            f"{run_dir} is in use by the Kamailio (pid {kamailio.pid}) of a running"
            f" `counterpoise up` (pid {owner}): stop that one, or give this one another --run-dir"
        )
    print(f"stopping Kamailio (pid {kamailio.pid}) left running in {run_dir} by an earlier up")
    try:
        processes.stop_tree(kamailio)
    except psutil.AccessDenied:
        raise CliError(
            f"the Kamailio (pid {kamailio.pid}) left running in {run_dir} by an earlier up is"
            " not this user's to stop: stop it as its user or root, then start again"
        ) from None
    pid_file.unlink(missing_ok=True)


def _kamailio(pid: int, pid_file: Path) -> psutil.Process | None:
    """Process ``pid`` if it is a running Kamailio that writes ``pid_file``: not another
    process, nor another Kamailio, that took the pid over."""
    proc = processes.running(pid) if pid > 0 else None
    if proc is None:
        return None
    try:
        argv = proc.cmdline()
        written = Path(proc.cwd()) / argv[argv.index("-P") + 1]
        return proc if proc.name() == "kamailio" and written.samefile(pid_file) else None
    except (psutil.Error, ValueError, IndexError, OSError):
        return None


def _owning_up(kamailio: psutil.Process) -> int | None:
    """The pid of the ``counterpoise up`` that started ``kamailio``, if it still runs."""
    try:
        parent = kamailio.parent()
        argv = parent.cmdline() if parent is not None else []
    except psutil.Error:
        return None
    command = {"counterpoise", "counterpoise.cli"}  # the console script, or python -m
    is_up = "up" in argv and any(Path(arg).name in command for arg in argv)
    return parent.pid if is_up and parent is not None else None
