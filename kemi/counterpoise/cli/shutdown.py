"""Stopping ``counterpoise up`` once, whatever signals arrive while it stops.

Kamailio and the embedded Redis run in sessions of their own, so only ``up``'s cleanup stops
them. A signal that aborted that cleanup would leave Kamailio running as an orphan, holding
the SIP port and the run folder: a supervisor that signals the process group while a wrapper
forwards SIGTERM delivers two in a row.
"""

from __future__ import annotations

import os
import signal
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Shutdown:
    """The first SIGTERM or SIGINT raises KeyboardInterrupt, as Ctrl-C does; once stopping
    has begun (by that signal, or because Kamailio exited) the next ones are only reported."""

    def __init__(self) -> None:
        self.begun = False
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._on_signal)

    def begin(self) -> None:
        """From now on a stop signal cannot interrupt the caller."""
        self.begun = True

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self.begun:
            self.begun = True
            raise KeyboardInterrupt
        # os.write, not print: the interrupted code may be inside a write to the same stream.
        name = signal.Signals(signum).name
        os.write(2, f"counterpoise: {name} ignored, already stopping\n".encode())
