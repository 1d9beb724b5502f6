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

from counterpoise.core.location import count_part
from counterpoise.kamailio import htables
from counterpoise.kamailio.htables import Htable


class Counters:
    def __init__(self, table: Htable) -> None:
        self.table = table
        self._pid = 0
        self._key = ""
        self._counts: dict[str, int] = {}
        self._parts: dict[str, str] = {}
        """Each counter as it stands in the value (``core.location.count_part``): an event
        formats only those it changed."""

    def count(self, name: str, amount: int = 1) -> None:
        self.add({name: amount})

    def add(self, amounts: Mapping[str, int]) -> None:
        """Count each name by its amount, in one write (``core.location.encode_counts``)."""
        pid = os.getpid()
        if pid != self._pid:  # a fresh process after fork counts from zero
            self._pid, self._key, self._counts, self._parts = pid, str(pid), {}, {}
        counts, parts = self._counts, self._parts
        for name, amount in amounts.items():
            count = counts[name] = counts.get(name, 0) + amount
            parts[name] = count_part(name, count)
        KSR.htable.sht_sets(self.table.name, self._key, " ".join(parts.values()))


EDGE = Counters(htables.EDGE_COUNTERS)
"""What the edge refused or could not read: ``shed``, ``dropped_flood``, ``banned``,
``dropped_banned``, ``relay_denied``, ``stray_reply``, ``foreign_reply``, ``not_utf8``,
``error_<what>``, ``inflight_corrected``, ``no_dialog_key``, ``unsealed``,
``queued_event_unreadable`` (a line of the timer's queue that is no event); and what it let
through unmatched: ``stray_forwarded``, ``orphan_forwarded``."""
