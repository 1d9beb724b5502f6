"""What the config's own dialog and reply routes (``embed/counterpoise-dialog.cfg``, route
``CP_FINAL`` of ``embed/counterpoise.cfg``) read from the timer process, beside the pool's
addresses (``kamailio.pool_addresses``): the in-dialog timer, whether the location server
records dialogs (the in-dialog route queues a sealed ACK or BYE only then), and the bounds
of their queue of events; and the edge counters and queue slots they count, created at 0
(``$shtinc`` creates no key). Written at each sync tick, only what changed."""

from __future__ import annotations

import KSR

from counterpoise.core import location, queued_reply
from counterpoise.core.settings import Settings
from counterpoise.kamailio import htables


class NativeDialogTable:
    """The timer process's side; it alone writes these keys, so it remembers what it wrote."""

    def __init__(self) -> None:
        self._settings: tuple[int, int, int, int] | None = None

    def publish(self, settings: Settings) -> None:
        if self._settings is None:
            for name in htables.NATIVE_EDGE_COUNTERS:
                if KSR.htable.sht_is_null(htables.EDGE_COUNTERS.name, name) > 0:
                    KSR.htable.sht_seti(htables.EDGE_COUNTERS.name, name, 0)
            # Before the dialog records' switch: a route that sees it on finds its queue.
            for name in (htables.DIALOG_EVENT_SEQ, htables.DIALOG_EVENT_READ):
                if KSR.htable.sht_is_null(htables.ROUTING.name, name) > 0:
                    KSR.htable.sht_seti(htables.ROUTING.name, name, 0)
            KSR.htable.sht_seti(
                htables.ROUTING.name, htables.DIALOG_EVENTS_MAX, location.DIALOG_EVENTS_MAX
            )
        records = settings.location
        wanted = (
            int(settings.failover.in_dialog_fr_timer_ms),
            location.dialog_event_max_chars(
                records.record_call_id_max_chars, records.record_tag_max_chars
            ),
            int(records.location_server and records.dialog_record_ttl_ms > 0),
            queued_reply.max_chars(records.record_call_id_max_chars, records.record_tag_max_chars),
        )
        if wanted != self._settings:
            self._settings = wanted
            table = htables.ROUTING.name
            # In this order: the reply route queues a reply only once it sees the bound of
            # its line, and then sees whether to record the reply's dialog.
            names = (
                htables.IN_DIALOG_FR_TIMER_MS,
                htables.DIALOG_EVENT_MAX_CHARS,
                htables.DIALOG_RECORDS,
                htables.REPLY_EVENT_MAX_CHARS,
            )
            for name, value in zip(names, wanted, strict=True):
                KSR.htable.sht_seti(table, name, value)
