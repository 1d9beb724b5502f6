"""What the config's own dialog routes (``embed/counterpoise-dialog.cfg``) read from the timer
process: the pool's addresses (``core.dialog_seal.source_keys``), the in-dialog timer, whether
the location server is on; and the edge counters they count, created at 0 (``$shtinc``
creates no key). Written at each sync tick, only what changed."""

from __future__ import annotations

from collections.abc import Mapping

import KSR

from counterpoise.core import dialog_seal, edge
from counterpoise.core.settings import Settings
from counterpoise.kamailio import htables


class NativeDialogTable:
    """The timer process's side; it alone writes these keys, so it remembers what it wrote."""

    def __init__(self) -> None:
        self._hops: Mapping[str, frozenset[edge.Address]] | None = None
        self._keys: frozenset[str] = frozenset()
        self._settings: tuple[int, int] | None = None

    def publish(self, hops: Mapping[str, frozenset[edge.Address]], settings: Settings) -> None:
        if self._settings is None:
            for name in htables.NATIVE_EDGE_COUNTERS:
                if KSR.htable.sht_is_null(htables.EDGE_COUNTERS.name, name) > 0:
                    KSR.htable.sht_seti(htables.EDGE_COUNTERS.name, name, 0)
        wanted = (
            int(settings.failover.in_dialog_fr_timer_ms),
            int(settings.location.location_server),
        )
        if wanted != self._settings:
            self._settings = wanted
            table = htables.ROUTING.name
            KSR.htable.sht_seti(table, htables.IN_DIALOG_FR_TIMER_MS, wanted[0])
            KSR.htable.sht_seti(table, htables.LOCATION_SERVER, wanted[1])
        if hops != self._hops:
            self._hops = hops
            keys = dialog_seal.source_keys(hops)
            for key in keys - self._keys:
                KSR.htable.sht_seti(htables.POOL_ADDRESSES.name, key, 1)
            for key in self._keys - keys:
                KSR.htable.sht_rm(htables.POOL_ADDRESSES.name, key)
            self._keys = keys
