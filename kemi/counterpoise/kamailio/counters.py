"""Per-node counters in shared memory: ``"<name> <pid>"`` -> int, one writer per key.

Each process keeps its own totals and writes them whole (``sht_seti``), so no lock is taken
and ``kamcmd htable.dump <table>`` shows every worker's count; ``core.location.sum_counters``
adds them up. Two tables use it: ``htables.LOCATION_COUNTERS`` (the location server) and
``htables.EDGE_COUNTERS`` (the edge's trust rules), which the sync loop also publishes to
``cp:rejects:<node>``.
"""

from __future__ import annotations

import os

import KSR

from counterpoise.kamailio import htables
from counterpoise.kamailio.htables import Htable


class Counters:
    def __init__(self, table: Htable) -> None:
        self.table = table
        self._pid = 0
        self._counts: dict[str, int] = {}

    def count(self, name: str, amount: int = 1) -> None:
        pid = os.getpid()
        if pid != self._pid:  # a fresh process after fork counts from zero
            self._pid, self._counts = pid, {}
        value = self._counts.get(name, 0) + amount
        self._counts[name] = value
        KSR.htable.sht_seti(self.table.name, f"{name} {pid}", value)


EDGE = Counters(htables.EDGE_COUNTERS)
"""What the edge refused or could not read: ``shed``, ``dropped_flood``, ``banned``,
``dropped_banned``, ``relay_denied``, ``stray_reply``, ``foreign_reply``, ``not_utf8``,
``error_<what>``, ``inflight_corrected``, ``no_dialog_key``, ``unsealed``; and what it let
through unmatched: ``stray_forwarded``, ``orphan_forwarded``."""
