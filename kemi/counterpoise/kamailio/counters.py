"""Per-node counters in shared memory: one value per process, ``"<pid>"`` ->
``"name=count name=count ..."`` (``core.location.encode_counts``), so no lock is taken and an
event that counts several things costs one shared-memory write.

Each process keeps its own totals and writes them whole (``sht_sets``); ``kamcmd htable.dump
<table>`` shows every process's counts and ``core.location.sum_counters`` adds them up. Two
tables use it: ``htables.LOCATION_COUNTERS`` (the location server) and
``htables.EDGE_COUNTERS`` (the edge's trust rules), which the sync loop also publishes to
``cp:rejects:<node>``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import KSR

from counterpoise.core.location import encode_counts
from counterpoise.kamailio import htables
from counterpoise.kamailio.htables import Htable


class Counters:
    def __init__(self, table: Htable) -> None:
        self.table = table
        self._pid = 0
        self._counts: dict[str, int] = {}

    def count(self, name: str, amount: int = 1) -> None:
        self.add({name: amount})

    def add(self, amounts: Mapping[str, int]) -> None:
        """Count each name by its amount, in one write."""
        pid = os.getpid()
        if pid != self._pid:  # a fresh process after fork counts from zero
            self._pid, self._counts = pid, {}
        counts = self._counts
        for name, amount in amounts.items():
            counts[name] = counts.get(name, 0) + amount
        KSR.htable.sht_sets(self.table.name, str(pid), encode_counts(counts))


EDGE = Counters(htables.EDGE_COUNTERS)
"""What the edge refused or could not read: ``shed``, ``dropped_flood``, ``banned``,
``dropped_banned``, ``relay_denied``, ``stray_reply``, ``foreign_reply``, ``not_utf8``,
``error_<what>``, ``inflight_corrected``, ``no_dialog_key``, ``unsealed``; and what it let
through unmatched: ``stray_forwarded``, ``orphan_forwarded``."""
