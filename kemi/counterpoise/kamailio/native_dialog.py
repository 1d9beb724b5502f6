"""What the config's own dialog routes (``embed/counterpoise-dialog.cfg``) read from the timer
process, beside the pool's addresses (``kamailio.pool_addresses``): the in-dialog timer,
whether the location server is on and the bounds of its queue of dialog events; and the edge
counters and queue slots they count, created at 0 (``$shtinc`` creates no key). Written at
each sync tick, only what changed."""

from __future__ import annotations

import KSR

from counterpoise.core import location
from counterpoise.core.settings import Settings
from counterpoise.kamailio import htables


class NativeDialogTable:
    """The timer process's side; it alone writes these keys, so it remembers what it wrote."""

    def __init__(self) -> None:
        self._settings: tuple[int, int, int] | None = None

    def publish(self, settings: Settings) -> None:
        if self._settings is None:
            for name in htables.NATIVE_EDGE_COUNTERS:
                if KSR.htable.sht_is_null(htables.EDGE_COUNTERS.name, name) > 0:
                    KSR.htable.sht_seti(htables.EDGE_COUNTERS.name, name, 0)
            # Before the location server's switch: a route that sees it on finds its queue.
            for name in (htables.DIALOG_EVENT_SEQ, htables.DIALOG_EVENT_READ):
                if KSR.htable.sht_is_null(htables.ROUTING.name, name) > 0:
                    KSR.htable.sht_seti(htables.ROUTING.name, name, 0)
            KSR.htable.sht_seti(
                htables.ROUTING.name, htables.DIALOG_EVENTS_MAX, location.DIALOG_EVENTS_MAX
            )
        wanted = (
            int(settings.failover.in_dialog_fr_timer_ms),
            location.dialog_event_max_chars(
                settings.location.record_call_id_max_chars, settings.location.record_tag_max_chars
            ),
            int(settings.location.location_server),
        )
        if wanted != self._settings:
            self._settings = wanted
            table = htables.ROUTING.name
            KSR.htable.sht_seti(table, htables.IN_DIALOG_FR_TIMER_MS, wanted[0])
            KSR.htable.sht_seti(table, htables.DIALOG_EVENT_MAX_CHARS, wanted[1])
            KSR.htable.sht_seti(table, htables.LOCATION_SERVER, wanted[2])
