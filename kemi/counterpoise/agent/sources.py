"""What the proxy itself says of its load: Kamailio's RPC, or any command printing a number."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from counterpoise import control

SOURCE_TIMEOUT_MS = 500
"""Longest a source query (one JSON-RPC call or the ``--command``) may take before it is
given up and the report says so: half the default interval, so a hung proxy does not delay
reports."""


class SourceError(RuntimeError):
    """The proxy could not be queried; the message goes into the report's ``error``."""


@dataclasses.dataclass(frozen=True)
class SourceSample:
    transactions: int | None = None
    """SIP transactions in progress."""
    calls: int | None = None
    """Calls (dialogs) in progress, None if the proxy does not track them."""


class Source(Protocol):
    """Asks one proxy for its load. Another proxy type is one small class with this method;
    it raises ``SourceError`` (or anything) when the proxy does not answer."""

    def sample(self) -> SourceSample: ...


def run_bounded(command: Sequence[str] | str, timeout_s: float, shell: bool = False) -> str:
    """stdout of ``command``; ``SourceError`` if it fails or outlives ``timeout_s``, in which
    case its whole process group is killed (a shell's children too)."""
    try:
        proc = subprocess.Popen(
            command,
            shell=shell,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
    except OSError as error:
        raise SourceError(f"cannot run {command!r}: {error.strerror or error}") from None
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise SourceError(f"{_show(command)} timed out after {timeout_s * 1000:.0f} ms") from None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # leftovers of the group, if any
    if proc.returncode != 0:
        detail = (err.strip() or out.strip()).splitlines()
        raise SourceError(
            f"{_show(command)} exited {proc.returncode}: {detail[0] if detail else ''}".strip()
        )
    return out


def _show(command: Sequence[str] | str) -> str:
    return command if isinstance(command, str) else " ".join(command)


class KamailioSource:
    """Kamailio over JSON-RPC (its ``jsonrpcs`` module's datagram socket): ``tm.stats`` gives
    transactions (``current`` minus those in the wait state after completion, ``waiting``),
    ``dlg.stats_active`` calls when the dialog module is loaded (asked once; if the command
    does not exist calls stay None)."""

    def __init__(self, rpc_socket: Path, timeout_s: float = SOURCE_TIMEOUT_MS / 1000) -> None:
        self.rpc_socket = rpc_socket
        self.timeout_s = timeout_s
        self._dialogs: bool | None = None  # None: not tried yet

    def _query(self, method: str) -> dict[str, int]:
        try:
            result = control.call(self.rpc_socket, method, timeout_s=self.timeout_s)
        except control.RpcError as error:
            raise SourceError(f"Kamailio JSON-RPC {error}") from None
        if not isinstance(result, dict):
            raise SourceError(f"Kamailio JSON-RPC {method}: unexpected answer {result!r}")
        return {name: value for name, value in result.items() if isinstance(value, int)}

    def sample(self) -> SourceSample:
        stats = self._query("tm.stats")
        if "current" not in stats:
            raise SourceError("Kamailio JSON-RPC tm.stats: no 'current' in its answer")
        transactions = max(0, stats["current"] - stats.get("waiting", 0))
        calls = None
        if self._dialogs is not False:
            try:
                calls = self._query("dlg.stats_active").get("all")
                self._dialogs = True
            except SourceError as error:
                if self._dialogs is None and "Method Not Found" in str(error):
                    self._dialogs = False  # no dialog module: do not ask again
        return SourceSample(transactions=transactions, calls=calls)


class CommandSource:
    """Any proxy: a shell command printing the transactions in progress (one number)."""

    def __init__(self, command: str, timeout_s: float = SOURCE_TIMEOUT_MS / 1000) -> None:
        self.command = command
        self.timeout_s = timeout_s

    def sample(self) -> SourceSample:
        out = run_bounded(self.command, self.timeout_s, shell=True).strip()
        try:
            value = float(out)
        except ValueError:
            raise SourceError(f"{self.command!r} printed {out[:60]!r}, not a number") from None
        if not math.isfinite(value) or value < 0:
            raise SourceError(f"{self.command!r} printed {out[:60]!r}, not a count >= 0")
        return SourceSample(transactions=round(value))
