"""The SIP workers' and the sync loop's side of a node's shared memory: the routing table,
in-flight counts, tallies, signs of life, probes, the retry budget, the runtime settings
(the tables are declared, with their keys and values, in ``kamailio.htables``).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable, Mapping, Sequence

import KSR

from counterpoise import clock
from counterpoise.core import attempts, edge, routing_table
from counterpoise.core.attempts import stamp
from counterpoise.core.hold import Limit
from counterpoise.core.load import header_utilisation
from counterpoise.core.location import sum_counters
from counterpoise.core.reports import BadReport, parse_load_header
from counterpoise.core.routing_table import RoutingEntry
from counterpoise.core.selection import WeightedPicker
from counterpoise.core.tally import NOTHING, Tally
from counterpoise.kamailio import htables
from counterpoise.kamailio.counters import EDGE
from counterpoise.kamailio.htables import Htable
from counterpoise.kamailio.pool_addresses import PoolAddresses, resolve
from counterpoise.monitoring import node as node_metrics

HEARD_EVERY_MS = 100
"""A worker writes a proxy's sign of life at most this often: half a sync tick, so every
tick sees it, at no more than 10 shared-memory writes a second per proxy and worker."""
_ITERATOR = "cpit"
_ITEM_KEY, _ITEM_VALUE = f"$shtitkey({_ITERATOR})", f"$shtitval({_ITERATOR})"
LOAD_HEADERS_MEMO = 256
"""Distinct ``X-CP-Load`` values a worker remembers the reading of: a proxy states small
counts, so its replies repeat a few values, and a reply costs a dict lookup, not a parse."""


def _int(table: Htable, key: str) -> int:
    value = KSR.htable.sht_get(table.name, key)
    return value if isinstance(value, int) and value > 0 else 0


def inflight(uri: str) -> int:
    """Requests in flight to ``uri`` from this node, ringing calls included."""
    return _live_count(htables.INFLIGHT, uri)


def inflight_add(uri: str, delta: int, sent_stamp: int) -> None:
    """Count an attempt relayed at ``sent_stamp`` in (+1) or out (-1) of flight."""
    _epoch_add(htables.INFLIGHT, uri, delta, sent_stamp)


def awaiting(uri: str) -> int:
    """Requests of this node that ``uri`` has not answered yet but for its 100 Trying: in its
    queue or in its workers' hands, what holding limits. A ringing call has left it (its
    ringing time is the callee's, and it would fill the limit for seconds)."""
    return _live_count(htables.AWAITING, uri)


def awaiting_add(uri: str, delta: int, sent_stamp: int) -> None:
    """Count an attempt relayed at ``sent_stamp`` in (+1) or out (-1, its first reply other
    than 100 Trying, or its end) of the proxy's work."""
    _epoch_add(htables.AWAITING, uri, delta, sent_stamp)


def _live_count(table: Htable, uri: str) -> int:
    """The counts of ``uri`` in ``table`` over the live epochs."""
    total = 0
    for epoch in attempts.live_epochs(clock.monotonic_ms()):
        value = KSR.htable.sht_get(table.name, f"{uri} {epoch}")
        total += value if isinstance(value, int) else 0
    return max(total, 0)


def relayed(uri: str, sent_stamp: int) -> None:
    """Count an attempt relayed at ``sent_stamp`` in flight and in the proxy's work
    (``inflight_add`` and ``awaiting_add`` of +1, on their one key)."""
    key = _epoch_key(uri, sent_stamp)
    KSR.htable.sht_inc(htables.INFLIGHT.name, key)
    KSR.htable.sht_inc(htables.AWAITING.name, key)


def _epoch_key(uri: str, sent_stamp: int) -> str:
    return f"{uri} {attempts.epoch(sent_stamp)}"


def _epoch_add(table: Htable, uri: str, delta: int, sent_stamp: int) -> None:
    key = _epoch_key(uri, sent_stamp)
    if delta > 0:
        KSR.htable.sht_inc(table.name, key)
    else:
        KSR.htable.sht_dec(table.name, key)


def take_retry_token() -> bool:
    """Spend one of the node's retry tokens, or count a refusal when none is left. Read and
    decrement are two steps: workers racing for the last token may overspend by at most
    one each, until the next tick rewrites the count."""
    tokens = KSR.htable.sht_get(htables.RETRY_BUDGET.name, htables.RETRY_TOKENS)
    if isinstance(tokens, int) and tokens > 0:
        KSR.htable.sht_dec(htables.RETRY_BUDGET.name, htables.RETRY_TOKENS)
        KSR.htable.sht_inc(htables.RETRY_BUDGET.name, htables.RETRIES_SPENT)
        return True
    KSR.htable.sht_inc(htables.RETRY_BUDGET.name, htables.RETRIES_REFUSED)
    return False


class SharedTable:
    """The sync loop's view of shared memory (implements ``sync.SharedState``)."""

    def read_tallies(self) -> dict[str, Tally]:
        tallies = {}
        for key, value in items(htables.TALLIES):
            try:
                tallies[key] = Tally.decode(value)
            except ValueError:
                continue
        return tallies

    def read_load_rejections(self) -> Mapping[str, str]:
        return dict(items(htables.REJECTIONS))

    def read_location_rejections(self) -> tuple[int, str]:
        counts = sum_counters(dict(items(htables.LOCATION_COUNTERS)))
        last = KSR.htable.sht_get(htables.REJECTIONS.name, htables.LOCATION_REJECT)
        return counts.get(htables.REJECTED_RECORDS, 0), last if isinstance(last, str) else ""

    def inflight(self, uri: str) -> int:
        return inflight(uri)

    def read_heard(self) -> Mapping[str, int]:
        return {key: int(value) for key, value in items(htables.HEARD) if str(value).isdigit()}

    def retry_counts(self) -> tuple[int, int]:
        budget = htables.RETRY_BUDGET
        return _int(budget, htables.RETRIES_SPENT), _int(budget, htables.RETRIES_REFUSED)

    def set_retry_tokens(self, tokens: int) -> None:
        budget = htables.RETRY_BUDGET.name
        for counter in (htables.RETRIES_SPENT, htables.RETRIES_REFUSED):
            if KSR.htable.sht_is_null(budget, counter) > 0:
                KSR.htable.sht_seti(budget, counter, 0)
        KSR.htable.sht_seti(budget, htables.RETRY_TOKENS, tokens)

    def drop_stale_inflight(self, now_ms: int) -> int:
        drift = 0
        for table in (htables.INFLIGHT, htables.AWAITING):
            counts = dict(items(table))
            for key in attempts.stale_inflight(counts, now_ms):
                KSR.htable.sht_rm(table.name, key)
                if table == htables.INFLIGHT:  # AWAITING's drift is the same attempts': once
                    drift += max(_number(counts[key]), 0)
        if drift:
            EDGE.count("inflight_corrected", drift)
        return drift

    def read_counters(self) -> Mapping[str, int]:
        """The edge's counters summed over the processes (``cpedge``), with those the
        config's routes count under their own names (``htables.NATIVE_EDGE_COUNTERS``)."""
        dump = dict(items(htables.EDGE_COUNTERS))
        totals = sum_counters(dump)
        for name in htables.NATIVE_EDGE_COUNTERS:
            counted = _number(dump.get(name))
            if counted:
                totals[name] = totals.get(name, 0) + counted
        return totals

    def shed_count(self) -> int:
        """The node's ``shed`` counter (``monitoring.node.SHED``)."""
        return _int(htables.NODE_COUNTERS, node_metrics.SHED)

    def __init__(self) -> None:
        self._addresses = PoolAddresses()

    def publish_table(self, entries: Sequence[RoutingEntry]) -> None:
        KSR.htable.sht_sets(
            htables.ROUTING.name, htables.ROUTING_TABLE, routing_table.encode(entries)
        )
        # Before the version: a worker that sees the new table finds its proxies' addresses.
        self._addresses.publish(frozenset(entry.uri for entry in entries))
        bump_version()


def bump_version() -> None:
    """Tell the workers that something the timer process publishes changed (the routing
    table, the node's shed share, the dialog keys, the runtime settings): each reads the
    version once per request and the rest only when it moved. Written after the value, by
    the timer process alone, so the read and the write race with no other writer."""
    table = htables.ROUTING.name
    version = KSR.htable.sht_get(table, htables.ROUTING_VERSION)
    KSR.htable.sht_seti(
        table, htables.ROUTING_VERSION, (version if isinstance(version, int) else 0) + 1
    )


class SettingsFeed:
    """One process's view of the runtime settings ``counterpoise up`` pushed."""

    def __init__(self) -> None:
        self._version: object = None

    def changes(self) -> dict[str, str] | None:
        """The changed settings (name -> text) when they were pushed again since the last
        call, else None: one shared-memory read per call, a parse only on change."""
        version = KSR.htable.sht_get(htables.ROUTING.name, htables.RUNTIME_SETTINGS_VERSION)
        if version == self._version:
            return None
        self._version = version
        raw = KSR.htable.sht_get(htables.ROUTING.name, htables.RUNTIME_SETTINGS)
        return json.loads(raw) if isinstance(raw, str) else None


class WorkerView:
    """One SIP worker's cached copy of the routing table and its own tallies."""

    def __init__(self) -> None:
        self.version: object = None
        """The published version the copy is of (``bump_version``)."""
        self.picker = WeightedPicker([])
        self.limits: dict[str, Limit] = {}
        """Per proxy of the table, its in-flight limit for holding requests (``core.hold``)
        and whether it is queueing."""
        self.returning = False
        """Whether a proxy of the table out of the weighting may come back
        (``admission.may_return``): a full pool then holds instead of shedding."""
        self.long_wait: frozenset[str] = frozenset()
        """The proxies of the table whose requests get ``saturated_fr_timer_ms`` for a first
        reply instead of ``fr_timer_ms`` (``policy.timers.first_reply_timeout_ms``)."""
        self.set_aside: frozenset[str] = frozenset()
        """The proxies of the table weighing 0 only for their silence (still ``up``)."""
        self.hops: dict[str, frozenset[edge.Address]] = {}
        """Each pool proxy's addresses (``edge.pool_hops``): where its requests and replies
        come from, where requests from outside may go."""
        self.pool: frozenset[edge.Address] = frozenset()
        self.node_shed_percent = 0
        """The share of new initial requests the node sheds for its own overload
        (``node_load``)."""
        self._tallies: dict[str, Tally] = {}
        self._heard_written: dict[str, int] = {}
        self._all_heard_until_ms = 0
        """Until when every proxy of the table has a sign of life this worker wrote less than
        ``HEARD_EVERY_MS`` before: no reply can add one then (``hears_nothing_new``)."""
        self._pid = os.getpid()

    def refresh(self) -> WeightedPicker:
        """The current table and shed share: one shared-memory read per request, the rest
        read and parsed only when the version moved."""
        version = KSR.htable.sht_get(htables.ROUTING.name, htables.ROUTING_VERSION)
        if version != self.version:
            self.node_shed_percent = _int(htables.ROUTING, htables.NODE_SHED_PERCENT)
            raw = KSR.htable.sht_get(htables.ROUTING.name, htables.ROUTING_TABLE)
            entries = routing_table.decode(raw) if isinstance(raw, str) else []
            self.picker = WeightedPicker([(entry.uri, entry.weight) for entry in entries])
            self.limits = {
                e.uri: Limit(e.inflight_limit, e.queueing, e.hold_limit) for e in entries
            }
            self.long_wait = frozenset(entry.uri for entry in entries if entry.long_wait)
            self.returning = any(entry.returning for entry in entries)
            self.set_aside = frozenset(entry.uri for entry in entries if entry.set_aside)
            self._note_all_heard()  # a proxy new to the table has no sign of life written yet
            self.version = version
            uris = [entry.uri for entry in entries]
            if set(self.hops) != set(uris):  # resolve names only on change
                self.hops = edge.pool_hops(uris, resolve)
                self.pool = frozenset().union(*self.hops.values())
        return self.picker

    def count_request(
        self, uri: str, failed: bool, first_ms: int, final_ms: int, trying_ms: int | None = None
    ) -> None:
        tally = self._tallies.get(uri, NOTHING)
        self._store(uri, tally.with_request(failed, first_ms, final_ms, trying_ms))

    def count_outcome(
        self,
        uri: str,
        loads: Sequence[str],
        failed: bool,
        first_reply_ms: int | None,
        final_ms: int,
        trying_ms: int | None,
        cap_ms: int,
        write: bool = True,
    ) -> None:
        """An attempt's outcome judged of its proxy (``attempts.Outcome``: ok or failed),
        with the load its replies stated (``loads``), in one write of the tally: the latency
        sample is ``attempts.latency_sample_ms`` of its times, ``cap_ms`` the failure
        penalty. The one count of a worker's reply route and of the timer's queued replies.
        ``write=False``: as ``note_load_headers``."""
        if loads:
            self.note_load_headers(uri, loads, write=False)
        sample = attempts.latency_sample_ms(first_reply_ms, final_ms, cap_ms, trying_ms)
        tally = self._tallies.get(uri, NOTHING)
        self._store(uri, tally.with_request(failed, sample, final_ms, trying_ms), write)

    def count_timeout(self, uri: str, waited_ms: int, penalty_ms: int) -> None:
        self._store(uri, self._tallies.get(uri, NOTHING).with_timeout(waited_ms, penalty_ms))

    def hears_nothing_new(self, now_ms: int) -> bool:
        """Whether ``note_heard`` would write nothing now whatever proxy a reply came from:
        every proxy of the table had its sign of life written within ``HEARD_EVERY_MS``, so
        the reply's status and source need not be read."""
        return now_ms < self._all_heard_until_ms

    def note_heard(self, uri: str, now_ms: int) -> None:
        """A reply that is not a failure came from ``uri``; ignored unless it is a proxy of the
        table."""
        if uri not in self.limits or now_ms - self._written_ms(uri) < HEARD_EVERY_MS:
            return
        self._heard_written[uri] = now_ms
        KSR.htable.sht_seti(htables.HEARD.name, f"{self._pid} {uri}", stamp(now_ms))
        self._note_all_heard()

    def _note_all_heard(self) -> None:
        """Until when every proxy of the table has a recent sign of life (``hears_nothing_new``):
        after each write of one, and for each new table."""
        oldest_ms = min(map(self._written_ms, self.limits), default=-HEARD_EVERY_MS)
        self._all_heard_until_ms = oldest_ms + HEARD_EVERY_MS

    def _written_ms(self, uri: str) -> int:
        """When this worker last wrote ``uri``'s sign of life; long enough ago that one is due
        when it never did."""
        return self._heard_written.get(uri, -HEARD_EVERY_MS)

    def count_late_reply(self, uri: str) -> None:
        self._store(uri, self._tallies.get(uri, NOTHING).with_late_reply())

    def count_probe(self, uri: str, failed: bool, rtt_ms: int) -> None:
        self._store(uri, self._tallies.get(uri, NOTHING).with_probe(failed, rtt_ms))

    def note_probe_answered(self, uri: str, sent_ms: int) -> None:
        if sent_ms > self.probe_answered_ms(uri):
            KSR.htable.sht_seti(htables.PROBES.name, uri, sent_ms)

    def probe_answered_ms(self, uri: str) -> int:
        """Send time of ``uri``'s latest answered probe, as far as any worker has seen; 0 if
        none."""
        return _int(htables.PROBES, uri)

    def note_load_headers(self, uri: str, values: Iterable[str], write: bool = True) -> None:
        """Count the load each ``X-CP-Load`` value of a proxy's reply (and of the provisional
        replies before it) stated, or why it could not be used, in one copy of the tally.
        ``write=False``: the caller writes the tally next (``write_tally``, or another count
        of the same reply), so the reply costs one shared-memory write, not two."""
        milli: list[int] = []
        rejected = 0
        for value in values:
            reading = _load_header_reading(value)
            if isinstance(reading, str):
                KSR.htable.sht_sets(htables.REJECTIONS.name, uri, reading)
                rejected += 1
            else:
                milli.append(reading)
        tally = self._tallies.get(uri, NOTHING)
        self._store(uri, tally.with_load_readings(milli, rejected), write)

    def write_tally(self, uri: str) -> None:
        """Write ``uri``'s tally as it stands (after a count made with ``write=False``)."""
        self._store(uri, self._tallies.get(uri, NOTHING))

    def _store(self, uri: str, tally: Tally, write: bool = True) -> None:
        self._tallies[uri] = tally
        if write:
            KSR.htable.sht_sets(htables.TALLIES.name, f"{self._pid} {uri}", tally.encode())


@functools.lru_cache(maxsize=LOAD_HEADERS_MEMO)
def _load_header_reading(value: str) -> int | str:
    """The utilisation an ``X-CP-Load`` value states, in thousandths (as ``Tally`` sums it),
    or why it cannot be used."""
    try:
        return round(header_utilisation(parse_load_header(value)) * 1000)
    except BadReport as error:
        return str(error)


def _number(value: object) -> int:
    """An htable value as an int (``$shtitval`` gives ints as ints, strings as strings)."""
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return 0


def items(table: Htable) -> list[tuple[str, str]]:
    """Every key and value of a hash table (values as strings)."""
    items: list[tuple[str, str]] = []
    htable, get = KSR.htable, KSR.pv.gete
    if htable.sht_iterator_start(_ITERATOR, table.name) < 0:
        return items
    try:
        while htable.sht_iterator_next(_ITERATOR) > 0:
            items.append((get(_ITEM_KEY), get(_ITEM_VALUE)))
    finally:
        htable.sht_iterator_end(_ITERATOR)
    return items
