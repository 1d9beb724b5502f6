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


class DialogEvents:
    def __init__(self, routing: LocationRouting) -> None:
        self._routing = routing

    def drain(self) -> None:
        queued = shared.items(htables.DIALOG_EVENTS)
        if not queued:
            return
        slots = sorted(
            ((_slot(key), key, str(line)) for key, line in queued),
            key=lambda slot: (slot[0] is not None, slot[0] or 0),
        )
        for _, key, line in slots:
            KSR.htable.sht_rm(htables.DIALOG_EVENTS.name, key)
            event = location.DialogEvent.parse(line)
            if event is None:
                continue
            ids = (event.call_id, event.from_tag, event.to_tag)
            if event.confirms:
                self._routing.dialog_confirmed(ids, event.source)
            else:
                self._routing.dialog_ended(ids)
        last = slots[-1][0]
        if last is not None:  # the workers bound the queue against the last slot read
            KSR.htable.sht_seti(htables.ROUTING.name, htables.DIALOG_EVENT_READ, last)


def _slot(key: str) -> int | None:
    """A queue key's slot number; None, sorting first, for a key that is none (it is
    removed, unread)."""
    return int(key) if key.lstrip("-").isdigit() else None
