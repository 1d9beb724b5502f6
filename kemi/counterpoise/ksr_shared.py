"""Kamailio shared memory (htable) and probe sending, for the processes of one node.

The three hash tables are declared in ``kamailio.cfg``; their names are only here and there:

``cp``       ``table`` -> JSON list of ``[uri, weight]``, ``version`` -> int: the routing table
             the sync loop publishes and every SIP worker routes with.
``cpinf``    proxy URI -> requests in flight to it from this node (``sht_inc``/``sht_dec``,
             atomic across workers).
``cptally``  ``"<pid> <uri>"`` -> that worker's cumulative ``Tally`` of that proxy; each key
             has a single writer, so no lock is taken.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import KSR

from counterpoise.selection import WeightedPicker
from counterpoise.tally import Tally

TABLE = "cp"
INFLIGHT = "cpinf"
TALLIES = "cptally"
_ITERATOR = "cpit"


def inflight(uri: str) -> int:
    value = KSR.htable.sht_get(INFLIGHT, uri)
    return value if isinstance(value, int) and value > 0 else 0


def inflight_add(uri: str, delta: int) -> None:
    if delta > 0:
        KSR.htable.sht_inc(INFLIGHT, uri)
    else:
        KSR.htable.sht_dec(INFLIGHT, uri)


class SharedTable:
    """The sync loop's view of shared memory (implements ``sync.SharedState``)."""

    def read_tallies(self) -> dict[str, Tally]:
        tallies = {}
        if KSR.htable.sht_iterator_start(_ITERATOR, TALLIES) < 0:
            return tallies
        try:
            while KSR.htable.sht_iterator_next(_ITERATOR) > 0:
                key = KSR.pv.gete(f"$shtitkey({_ITERATOR})")
                try:
                    tallies[key] = Tally.decode(KSR.pv.gete(f"$shtitval({_ITERATOR})"))
                except ValueError:
                    continue
        finally:
            KSR.htable.sht_iterator_end(_ITERATOR)
        return tallies

    def ensure_inflight(self, uri: str) -> None:
        if KSR.htable.sht_is_null(INFLIGHT, uri) > 0:
            KSR.htable.sht_seti(INFLIGHT, uri, 0)

    def inflight(self, uri: str) -> int:
        return inflight(uri)

    def publish_table(self, entries: Sequence[tuple[str, float]]) -> None:
        KSR.htable.sht_sets(TABLE, "table", json.dumps(entries))
        version = KSR.htable.sht_get(TABLE, "version")
        KSR.htable.sht_seti(TABLE, "version", (version if isinstance(version, int) else 0) + 1)


class WorkerView:
    """One SIP worker's cached copy of the routing table and its own tallies."""

    def __init__(self) -> None:
        self._version: object = None
        self.picker = WeightedPicker([])
        self._tallies: dict[str, Tally] = {}
        self._pid = os.getpid()

    def refresh(self) -> WeightedPicker:
        """The current table: one shared-memory read per request, a parse only on change."""
        version = KSR.htable.sht_get(TABLE, "version")
        if version != self._version:
            raw = KSR.htable.sht_get(TABLE, "table")
            entries = json.loads(raw) if isinstance(raw, str) else []
            self.picker = WeightedPicker([(uri, float(weight)) for uri, weight in entries])
            self._version = version
        return self.picker

    def count_request(self, uri: str, failed: bool, first_ms: int, final_ms: int) -> None:
        self._store(uri, self._tallies.get(uri, Tally()).with_request(failed, first_ms, final_ms))

    def count_probe(self, uri: str, failed: bool, rtt_ms: int) -> None:
        self._store(uri, self._tallies.get(uri, Tally()).with_probe(failed, rtt_ms))

    def _store(self, uri: str, tally: Tally) -> None:
        self._tallies[uri] = tally
        KSR.htable.sht_sets(TALLIES, f"{self._pid} {uri}", tally.encode())


class UacProbeSender:
    """Sends an OPTIONS to a proxy with the uac module; the reply, or a local 408 after
    ``fr_timer_ms``, comes back to ``ksr_uac_reply`` in some SIP worker, with the proxy and
    the send time in ``$uac_req(evparam)``."""

    def __init__(self, from_uri: str) -> None:
        self._from_uri = from_uri

    def send(self, uri: str, sent_ms: int) -> None:
        KSR.pv.sets("$uac_req(method)", "OPTIONS")
        KSR.pv.sets("$uac_req(ruri)", uri)
        KSR.pv.sets("$uac_req(furi)", self._from_uri)
        KSR.pv.sets("$uac_req(turi)", uri)
        KSR.pv.sets("$uac_req(hdrs)", "Max-Forwards: 1\r\n")
        KSR.pv.seti("$uac_req(evroute)", 1)
        KSR.pv.sets("$uac_req(evparam)", f"{sent_ms} {uri}")
        KSR.uac.uac_req_send()
