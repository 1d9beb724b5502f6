"""``counterpoise up`` on SIGHUP: the settings that can change at runtime, changed."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from counterpoise import control
from counterpoise.core.settings import Settings, runtime_changes, runtime_values, with_runtime
from counterpoise.kamailio import htables


class Reloader:
    """On SIGHUP: re-read the config file (and the environment), push the runtime settings
    (``settings.RUNTIME``, declared ``runtime=True``) to the node's processes over JSON-RPC,
    and name the changed ones that need a restart. A bad file is refused and the node keeps
    its settings."""

    def __init__(self, load: Callable[[], Settings], settings: Settings, rpc_socket: Path) -> None:
        """``load`` reads the settings afresh (file, environment, ``up``'s options);
        ``settings`` are the node's now."""
        self.load = load
        self.current = settings
        self.rpc_socket = rpc_socket
        self.version = 0
        self.requested = False
        signal.signal(signal.SIGHUP, self._request)

    def _request(self, signum: int, frame: object) -> None:
        self.requested = True  # acted on in the main loop, not inside the handler

    def reload_if_requested(self) -> None:
        if not self.requested:
            return
        self.requested = False
        try:
            fresh = self.load()
        except ValueError as error:
            print(f"counterpoise: config not reloaded: {error}", file=sys.stderr)
            return
        changed, restart = runtime_changes(self.current, fresh)
        if restart:
            names = ", ".join(restart)
            print(f"counterpoise: {names} changed: not applied until a restart", file=sys.stderr)
        if not changed:
            print("counterpoise: config reloaded, no runtime setting changed")
            return
        self.version += 1
        table = htables.ROUTING.name
        values, version_key = json.dumps(runtime_values(fresh)), htables.RUNTIME_SETTINGS_VERSION
        try:  # the values before their version: a process that sees the version finds them
            control.call(self.rpc_socket, "htable.sets", table, htables.RUNTIME_SETTINGS, values)
            control.call(self.rpc_socket, "htable.seti", table, version_key, self.version)
        except control.RpcError as error:
            print(f"counterpoise: settings not pushed to Kamailio: {error}", file=sys.stderr)
            return
        self.current = with_runtime(self.current, changed)
        print(f"counterpoise: applied at runtime: {changed}")
