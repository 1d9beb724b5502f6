"""The timer process's side of the sealed ACKs and BYEs a native config's in-dialog route
queues (``htables.DIALOG_EVENTS``, ``embed/counterpoise-dialog.cfg``): each tick it reads and
removes them in queue order and does for each what a SIP worker would have done in Python
(``LocationRouting.dialog_confirmed``, ``dialog_ended``), so the worker enters no Python for
them. A dialog record is confirmed or ended at the next tick instead of at once; its Redis
write then goes the usual way (``DialogWriteBehind``)."""

from __future__ import annotations

import KSR

from counterpoise.core import location
from counterpoise.kamailio import htables, shared
from counterpoise.kamailio.location import LocationRouting

SLOT_SPAN = 2**32
"""Slots are numbered by a Kamailio htable integer, which wraps (after weeks at 1000 calls/s):
they are read in the order of their distance past the last slot read, modulo this span."""


class DialogEvents:
    def __init__(self, routing: LocationRouting) -> None:
        self._routing = routing
        self._read = 0
        """The last slot read; the route's counter starts at 0 too (``NativeDialogTable``)."""

    def drain(self) -> None:
        queued = shared.items(htables.DIALOG_EVENTS)
        if not queued:
            return
        ordered = sorted((self._after(key), key, str(line)) for key, line in queued)
        routing, table = self._routing, htables.DIALOG_EVENTS.name
        with routing.counts_written_once():
            for _, key, line in ordered:
                KSR.htable.sht_rm(table, key)
                event = location.DialogEvent.parse(line)
                if event is None:
                    continue
                ids = (event.call_id, event.from_tag, event.to_tag)
                if event.confirms:
                    routing.dialog_confirmed(ids, event.source)
                else:
                    routing.dialog_ended(ids)
        distance, key, _ = ordered[-1]
        if distance >= 0:  # the workers bound the queue against the last slot read
            self._read = int(key)
            KSR.htable.sht_seti(htables.ROUTING.name, htables.DIALOG_EVENT_READ, self._read)

    def _after(self, key: str) -> int:
        """How far past the last slot read the slot ``key`` is; -1, read first and only
        removed, for a key that is no slot."""
        if not key.lstrip("-").isdigit():
            return -1
        return (int(key) - self._read) % SLOT_SPAN
