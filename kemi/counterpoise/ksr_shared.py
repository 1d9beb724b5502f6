"""Kamailio shared memory (htable) and probe sending, for the processes of one node.

The three hash tables are declared in ``kamailio.cfg``; their names are only here and there:

``cp``       ``table`` -> JSON list of ``[uri, weight]``, ``version`` -> int: the routing table
             the sync loop publishes and every SIP worker routes with.
``cpinf``    proxy URI -> requests in flight to it from this node (``sht_inc``/``sht_dec``,
             atomic across workers).
``cptally``  ``"<pid> <uri>"`` -> that worker's cumulative ``Tally`` of that proxy; each key
             has a single writer, so no lock is taken.
``cpload``   proxy URI -> the latest reason an ``X-CP-Load`` of that proxy was rejected (the
             usable ones are summed into the workers' tallies).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

import KSR

from counterpoise.load import header_utilisation
from counterpoise.reports import BadReport, parse_load_header
from counterpoise.selection import WeightedPicker
from counterpoise.tally import Tally

TABLE = "cp"
INFLIGHT = "cpinf"
TALLIES = "cptally"
LOADS = "cpload"
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
        for key, value in items(TALLIES):
            try:
                tallies[key] = Tally.decode(value)
            except ValueError:
                continue
        return tallies

    def read_load_rejections(self) -> Mapping[str, str]:
        return dict(items(LOADS))

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

    def note_load_header(self, uri: str, value: str) -> None:
        """Count the load a proxy's reply stated, or count why it could not be used."""
        tally = self._tallies.get(uri, Tally())
        try:
            utilisation = header_utilisation(parse_load_header(value))
        except BadReport as error:
            KSR.htable.sht_sets(LOADS, uri, str(error))
            self._store(uri, tally.with_load_header_rejected())
            return
        self._store(uri, tally.with_load_sample(utilisation))

    def _store(self, uri: str, tally: Tally) -> None:
        self._tallies[uri] = tally
        KSR.htable.sht_sets(TALLIES, f"{self._pid} {uri}", tally.encode())


class UacProbeSender:
    """Sends a probe (OPTIONS, or INVITE to ``invite_user``) to a proxy with the uac module.

    The reply, or a local 408 after ``fr_timer_ms``, comes back to ``ksr_uac_reply`` in some
    SIP worker, with the proxy and the send time in ``$uac_req(evparam)``. A 2xx to an INVITE
    probe is ended there with ``hang_up`` (tm sends the ACK of a locally sent INVITE itself).
    """

    def __init__(self, from_uri: str, contact_uri: str, method: str, invite_user: str) -> None:
        self._from_uri = from_uri
        self._contact_uri = contact_uri or from_uri
        self._method = method
        self._invite_user = invite_user

    def send(self, uri: str, sent_ms: int) -> None:
        target = uri
        headers = "Max-Forwards: 1\r\n"
        if self._method == "INVITE":
            target = uri.replace("sip:", f"sip:{self._invite_user}@", 1)
            headers += f"Contact: <{self._contact_uri}>\r\n"
        KSR.pv.sets("$uac_req(method)", self._method)
        KSR.pv.sets("$uac_req(ruri)", target)
        KSR.pv.sets("$uac_req(furi)", self._from_uri)
        KSR.pv.sets("$uac_req(turi)", target)
        KSR.pv.sets("$uac_req(hdrs)", headers)
        KSR.pv.seti("$uac_req(evroute)", 1)
        KSR.pv.sets("$uac_req(evparam)", f"{sent_ms} {uri}")
        KSR.uac.uac_req_send()


def hang_up(proxy: str) -> None:
    """End the dialog a 2xx to an INVITE probe (the reply being handled) created: a BYE within
    it, sent through the probed proxy."""
    target = KSR.pv.gete("$(ct{tobody.uri})") or KSR.pv.gete("$ru")
    cseq = KSR.pv.gete("$cs")
    headers = (
        f"From: {KSR.hdr.gete('From')}\r\n"
        f"To: {KSR.hdr.gete('To')}\r\n"
        f"Call-ID: {KSR.pv.gete('$ci')}\r\n"
        f"CSeq: {int(cseq) + 1 if cseq.isdigit() else 2} BYE\r\n"
        "Max-Forwards: 1\r\n"
    )
    KSR.tm.t_uac_send("BYE", target, proxy, "", headers, "")


def items(table: str) -> list[tuple[str, str]]:
    """Every key and value of a hash table (values as strings)."""
    items = []
    if KSR.htable.sht_iterator_start(_ITERATOR, table) < 0:
        return items
    try:
        while KSR.htable.sht_iterator_next(_ITERATOR) > 0:
            key = KSR.pv.gete(f"$shtitkey({_ITERATOR})")
            items.append((key, KSR.pv.gete(f"$shtitval({_ITERATOR})")))
    finally:
        KSR.htable.sht_iterator_end(_ITERATOR)
    return items
