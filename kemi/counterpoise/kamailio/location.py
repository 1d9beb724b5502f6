"""The location server inside Kamailio: per-worker Redis, lookups, record writes, counters.

Thin glue between KSR and the pure ``location`` module; ``kemi_app`` calls it at five points:
an initial request (``route_initial``), a 2xx reply to a relayed request (``on_2xx``), an
ACK (``dialog_confirmed``), an in-dialog request whose route set does not route it
(``route_dialog``) and a BYE (``dialog_ended``).

Every SIP worker has its own Redis connection, made on first use after Kamailio forked it,
with a socket timeout of ``location_redis_timeout_ms``; calls go through ``backoff.Guarded``,
so a dead Redis costs one bounded wait and then nothing until the backoff lets one call try
again. Without Redis, initial requests are routed by weight and counted as ``redis_skipped``.

Counters go to ``htables.LOCATION_COUNTERS``, one value per worker (``kamailio.counters``),
once per event however many it counts (a lookup's four, a 2xx's three): ``kamcmd -s
unixs:CTL htable.dump cploc``; ``location.sum_counters`` sums them over the workers.

Lookups of initial requests other than REGISTER are kept in ``htables.LOCATION_CACHE`` for
``location_cache_ms`` (holder or none), so a user already called costs no Redis round trip;
a REGISTER 2xx through this node drops its AOR's entry.

Dialog records are written behind, off the SIP path: the worker handling the 2xx puts the
record into ``htables.DIALOGS`` (seen at once by every worker of the node: the ACK right after
a 200 finds it; a node-private JSON list read back without the checks a record from Redis
needs); the worker handling the ACK of that 2xx (the dialog is confirmed) queues the Redis
write in ``htables.DIALOG_WRITES``, and one handling a BYE with the dialog's tags the delete.
(In a native config the worker only queues the sealed ACK or BYE for the timer process, which
calls ``dialog_confirmed`` and ``dialog_ended`` for it: ``kamailio.dialog_events``; it
queues their writes in its own memory, ``OwnWrites``, flushed with the shared queue. The
2xx's copy is written by the native reply route, and its bounds and counters are the timer's:
``native_dialog_started``.)
A worker's writes of one period of ``location.QUEUE_BATCH_MS`` share a queue entry (of at
most ``location.QUEUE_BATCH_WRITES``). The timer process sends the closed batches to Redis in
two pipelined round trips per tick (``DialogWriteBehind``): a call costs its SIP worker no
Redis round trip for its dialog record, and the timer one queue entry per batch, not one per
write. A 200 never
ACKed costs Redis nothing, and a caller address holds at most ``dialog_records_per_source``
records (counted in Redis by the timer process, against the source each queued set carries).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator

import KSR

from counterpoise import clock
from counterpoise.core import edge, location
from counterpoise.core.backoff import Guarded
from counterpoise.core.settings import Fallback, Settings
from counterpoise.kamailio import avps, htables, read, shared
from counterpoise.kamailio.counters import EDGE, Counters
from counterpoise.store.client import ERRORS
from counterpoise.store.keys import AOR, DIALOG
from counterpoise.store.location import DialogFlush, LocationStore

FORGED_BYE = "forged_bye"
"""Edge counter: a BYE whose tags were not those of the dialog record of its Call-ID; the
record is left as it was."""
CAPPED_DIALOG = "dialog_record_capped"
"""Edge counter: a confirmed dialog not recorded in Redis because its caller's address held
``dialog_records_per_source`` records (the dialog itself goes on by its route set)."""


def _text(spec: str) -> str:
    """A message value, "" when absent or not UTF-8 (``read``)."""
    return read.text(spec) or ""


class LocationRouting:
    def __init__(self, settings: Settings, log: Callable[[str], None]) -> None:
        self._settings = settings
        self._log = log
        self._store: LocationStore | None = None
        self._pid = 0
        self._batch_of = (0, 0, 0)
        """The period, process and part of ``_batch`` (``location.batch_key``): a fresh list
        in a new period or process, or once it holds ``location.QUEUE_BATCH_WRITES``."""
        self._batch: list[str] = []
        self._own_writes: OwnWrites | None = None
        """Where the timer process queues the writes of the events it drains
        (``queueing_in``); None in a SIP worker: shared memory."""
        self._counters = Counters(htables.LOCATION_COUNTERS)
        self._held_counts: dict[str, int] | None = None
        """The counts made inside ``counts_written_once``, written at its end."""
        self._guard = Guarded.with_backoff_of(
            settings,
            ERRORS,
            log,
            "Redis (location records)",
            "requests for registered users are routed by weight",
        )

    def _redis(self) -> LocationStore:
        if self._store is None or self._pid != os.getpid():
            # First use in this process: a connection of its own, never one made before fork.
            self._pid = os.getpid()
            self._store = _open(self._settings, self._settings.location.location_redis_timeout_ms)
            self._store.on_reject = self._rejected
        return self._store

    def _rejected(self, key: str, reason: str) -> None:
        """A location record that is unusable reads as absent; the timer process brings the
        count and the reason into ``cp:rejects:<node>`` and logs it once."""
        self.count(htables.REJECTED_RECORDS)
        KSR.htable.sht_sets(htables.REJECTIONS.name, htables.LOCATION_REJECT, f"{key}: {reason}")

    def _call(self, action: Callable[[LocationStore], object]) -> tuple[bool, object]:
        results: list[object] = []
        errors = self._guard.errors
        ok = self._guard.call(clock.monotonic_ms(), lambda: results.append(action(self._redis())))
        if self._guard.errors != errors:
            self.count("redis_errors")  # counterpoise_redis_errors_total{process="workers"}
        return ok, (results[0] if ok else None)

    def count(self, name: str, amount: int = 1) -> None:
        held = self._held_counts
        if held is None:
            self._counters.count(name, amount)
        else:
            held[name] = held.get(name, 0) + amount

    @contextlib.contextmanager
    def counts_written_once(self) -> Iterator[None]:
        """The counts made inside are written at its end, in one write: the timer process
        handles a tick's dialog events at once, not one shared-memory write per event."""
        self._held_counts = held = {}
        try:
            yield
        finally:
            self._held_counts = None
            if held:
                self._counters.add(held)

    def queueing_in(self, own: OwnWrites) -> LocationRouting:
        """For the timer process, which flushes the queue itself: this location server with
        its counters, whose dialog writes (of the events the timer drains) are queued in
        ``own``, not in shared memory."""
        routing = LocationRouting(self._settings, self._log)
        routing._counters = self._counters
        routing._own_writes = own
        return routing

    def _recordable(self, call_id: str, *tags: str) -> bool:
        """Whether a dialog's Call-ID and tags are short enough to record (``too_long``)."""
        settings = self._settings.location
        if edge.recordable(call_id, settings.record_call_id_max_chars) and (
            max(map(len, tags), default=0) <= settings.record_tag_max_chars
        ):
            return True
        self.count("too_long")
        return False

    # --- initial requests --------------------------------------------------------------------

    def route_initial(
        self, usable: Callable[[str], bool], set_aside: Callable[[str], bool]
    ) -> location.Decision:
        """Where the records send this initial request (``usable``: a proxy has a weight;
        ``set_aside``: it weighs 0 only for its silence). Only REGISTER (AOR from To) and
        requests with a user in the R-URI are looked up; the rest cost nothing."""
        started = clock.perf_ns()
        is_register = KSR.is_REGISTER()
        user, host = (_text("$tU"), _text("$td")) if is_register else (_text("$rU"), _text("$rd"))
        if not user or not host:
            return location.BY_WEIGHT
        name = location.aor(user, host)
        if not edge.recordable(name, self._settings.location.record_aor_max_chars):
            self.count("too_long")
            return location.BY_WEIGHT
        if is_register:
            avps.set_aor(name)
        # A REGISTER always reads Redis: its 2xx is what changes the records.
        ok, found, from_cache = self._holder(name, host, cached=not is_register)
        if not ok:
            decision = location.Decision(outcome="redis_skipped")
        else:
            holder_usable = found is not None and usable(found.proxy)
            decision = location.decide(
                found,
                holder_usable,
                is_register,
                self._settings.location.location_fallback,
                set_aside=found is not None and set_aside(found.proxy),
            )
            if decision.proxy and not is_register:
                avps.set_held()
        counts = {"lookups": 1, decision.outcome: 1}
        if from_cache:
            counts["cache_hits"] = 1
        counts["lookup_us"] = (clock.perf_ns() - started) // 1000
        self._counters.add(counts)  # one write for all the lookup's counters
        return decision

    def _holder(
        self, name: str, host: str, cached: bool
    ) -> tuple[bool, location.Holder | None, bool]:
        """The holder of AOR ``name`` from this node's cache when fresh, else from Redis
        (kept in the cache); False when Redis could not be asked; then whether the cache
        answered."""
        now = clock.monotonic_ms()
        ttl = self._settings.location.location_cache_ms
        if cached and ttl:
            entry = KSR.htable.sht_get(htables.LOCATION_CACHE.name, name)
            hit = location.CachedHolder.decode(entry, now) if isinstance(entry, str) else None
            if hit is not None:
                return True, hit.holder, True
        ok, records = self._call(lambda store: store.lookup(name, host.lower()))
        if not ok:
            return False, None, False
        found = location.holder(*records)
        if cached and ttl:
            cached = location.CachedHolder(found, now + ttl).encode()
            KSR.htable.sht_sets(htables.LOCATION_CACHE.name, name, cached)
        return True, found, False

    def keeps_to_holder(self) -> bool:
        """Whether a failed request must not fail over by weight (failure route)."""
        return self._settings.location.location_fallback == Fallback.REJECT and avps.held()

    # --- replies -------------------------------------------------------------------------------

    def on_2xx(self, proxy: str) -> None:
        """A 2xx from ``proxy`` (tm onreply route): record a registration or a dialog."""
        started = clock.perf_ns()
        method = _text("$rm")
        if method == "REGISTER":
            name = avps.aor()
            if not name:
                return
            self._count_write(started, self._registered(name, proxy))
        elif method == "INVITE":
            self.dialog_started(proxy, read.dialog_ids(), started)

    def dialog_started(
        self, proxy: str, ids: read.DialogIds, started_ns: int | None = None
    ) -> None:
        """A 2xx to an INVITE from ``proxy`` (``ids``: its Call-ID and tags): this node's copy
        of the dialog's record, unconfirmed (Redis gets it with the ACK). The reply route's,
        or the timer process's for a 2xx a native reply route counted (``kamailio.
        dialog_events``); ``started_ns``, when its caller's time began (``perf_ns``)."""
        if not self._settings.location.dialog_record_ttl_ms:
            return
        started = clock.perf_ns() if started_ns is None else started_ns
        self._count_write(started, self._dialog_started(proxy, ids))

    def native_dialog_started(self, proxy: str, ids: read.DialogIds) -> None:
        """``dialog_started`` in the timer process, of a 2xx whose copy route ``CP_FINAL``
        wrote already (``location.NATIVE_LOCAL``, read as the same record as a worker's copy),
        so that a request right after the 2xx found it: counted as a worker counts its write,
        the copy removed when the dialog is not recordable (counted ``too_long``, as a worker
        counts it)."""
        if not self._settings.location.dialog_record_ttl_ms:
            return
        started = clock.perf_ns()
        call_id, from_tag, to_tag = (value or "" for value in ids)
        if self._recordable(call_id, from_tag, to_tag):
            self._count_write(started, "dialogs")
            return
        if call_id:
            KSR.htable.sht_rm(htables.DIALOGS.name, call_id)
        self._count_write(started, None)

    def _count_write(self, started_ns: int, outcome: str | None) -> None:
        """A record's write: its time, and what it did, in one write of the counters."""
        counts = {"writes": 1, "write_us": (clock.perf_ns() - started_ns) // 1000}
        if outcome:
            counts[outcome] = 1
        if self._held_counts is None:
            self._counters.add(counts)
        else:
            for name, amount in counts.items():
                self.count(name, amount)

    def _registered(self, name: str, proxy: str) -> str:
        """Record or remove the registration; the counter of what it did."""
        contacts = _text("$(hdr(Contact)[*])")
        expires = _text("$hdr(Expires)") or None
        seconds = location.granted_expiry_s([contacts] if contacts else [], expires)
        if seconds > 0:
            now = clock.wall_ms()
            record = location.Record(proxy, since_ms=now, expires_ms=now + seconds * 1000)
            ok, _ = self._call(lambda store: store.put(AOR, name, record, seconds * 1000))
            outcome = "registered" if ok else "write_failed"
        else:
            ok, _ = self._call(lambda store: store.delete(AOR, name))
            outcome = "unregistered" if ok else "write_failed"
        # This node follows its own REGISTERs at once.
        KSR.htable.sht_rm(htables.LOCATION_CACHE.name, name)
        return outcome

    def _dialog_started(self, proxy: str, ids: read.DialogIds) -> str | None:
        """This node's copy of the record, unconfirmed: Redis gets it with the ACK;
        ``dialogs``, the counter of it, or None when it is not recorded."""
        call_id, from_tag, to_tag = (value or "" for value in ids)
        if not self._recordable(call_id, from_tag, to_tag):
            return None
        now = clock.wall_ms()
        expires = now + self._settings.location.dialog_record_ttl_ms
        record = location.local_dialog_record(proxy, now, expires, from_tag, to_tag)
        KSR.htable.sht_sets(htables.DIALOGS.name, call_id, record)
        return "dialogs"

    def _queue(self, write: location.PendingWrite) -> None:
        """Add ``write`` to this worker's batch of the current period
        (``location.QUEUE_BATCH_MS``)."""
        period, pid, part = self._batch_of
        now = (clock.monotonic_ms() // location.QUEUE_BATCH_MS, os.getpid())
        if now != (period, pid):
            self._batch_of, self._batch = (*now, 0), []
        elif len(self._batch) >= location.QUEUE_BATCH_WRITES:
            self._batch_of, self._batch = (period, pid, part + 1), []
        order_ns, key = clock.monotonic_ns(), location.batch_key(*self._batch_of)
        if self._own_writes is not None:
            self._batch.append("")  # counted only: the writes are kept as they are
            self._own_writes.add(key, order_ns, write)
        else:
            self._batch.append(location.batch_line(order_ns, write))
            KSR.htable.sht_sets(htables.DIALOG_WRITES.name, key, "\n".join(self._batch))

    # --- in-dialog requests --------------------------------------------------------------------

    def route_dialog(self) -> str | None:
        """The proxy holding this request's dialog by its record, or None."""
        if not self._settings.location.dialog_record_ttl_ms:
            return None
        ids = read.dialog_ids()
        call_id = ids[0] or ""
        if not self._recordable(call_id):
            return None
        local = KSR.htable.sht_get(htables.DIALOGS.name, call_id)
        if isinstance(local, str):
            record = location.Record.from_local(local, self._settings.location.dialog_record_ttl_ms)
        else:
            ok, record = self._call(lambda store: store.get(DIALOG, call_id))
            if not ok:
                self.count("dialog_skipped")
                return None
        if not isinstance(record, location.Record) or not record.matches_tags(
            ids[1] or "", ids[2] or ""
        ):
            self.count("dialog_unknown")
            return None
        self.count("dialog_routed")
        if KSR.is_BYE():
            self.dialog_ended(ids)
        return record.proxy

    def _local_dialog(
        self, ids: read.DialogIds
    ) -> tuple[str, tuple[str, str], location.Record | None] | None:
        """This request's Call-ID, its tags and this node's copy of its dialog record (None:
        no copy); None when dialogs are not recorded or the Call-ID is too long for one."""
        if not self._settings.location.dialog_record_ttl_ms:
            return None
        call_id = ids[0] or ""
        if not edge.recordable(call_id, self._settings.location.record_call_id_max_chars):
            return None
        return call_id, (ids[1] or "", ids[2] or ""), self._local_record(call_id)

    def _local_record(self, call_id: str) -> location.Record | None:
        """This node's copy of the dialog record of ``call_id``, if any."""
        local = KSR.htable.sht_get(htables.DIALOGS.name, call_id)
        if not isinstance(local, str):
            return None
        return location.Record.from_local(local, self._settings.location.dialog_record_ttl_ms)

    def dialog_confirmed(self, ids: read.DialogIds, caller_host: str) -> None:
        """An ACK (``ids``: its Call-ID and tags; ``caller_host``: the address it came from,
        as the request route read it): the first one with the tags of a dialog whose 2xx
        passed this node queues its record for Redis, counted against the caller's
        address."""
        found = self._local_dialog(ids)
        if found is None:
            return
        call_id, tags, record = found
        if record is None or record.source or not record.matches_tags(*tags):
            return  # not a dialog of this node's, or confirmed already
        confirmed = record.confirmed_by(location.source_of(caller_host))
        KSR.htable.sht_sets(htables.DIALOGS.name, call_id, confirmed.to_local())
        ttl = max(confirmed.expires_ms - clock.wall_ms(), 1)
        self._queue(location.PendingWrite.setting(call_id, confirmed, ttl))
        self.count("confirmed")

    def dialog_ended(self, ids: read.DialogIds) -> None:
        """A BYE (``ids``: its Call-ID and tags): its dialog's record is no longer needed.
        Only a BYE with the dialog's own tags deletes it: this node's copy is checked here,
        the one in Redis by the timer process (``DialogWriteBehind``); a BYE with other tags
        is counted as forged."""
        found = self._local_dialog(ids)
        if found is None:
            return
        call_id, tags, record = found
        if record is not None and not record.matches_tags(*tags):
            EDGE.count(FORGED_BYE)
            return
        KSR.htable.sht_rm(htables.DIALOGS.name, call_id)
        self._queue(location.PendingWrite(call_id, tags=tags))


@dataclasses.dataclass
class _OwnWrite:
    """One write of ``OwnWrites``: its line's length is bounded until it is encoded."""

    order_ns: int
    write: location.PendingWrite
    chars: int
    """At most its line's length (``location.batch_line_most_chars``), exact once encoded."""
    line: str | None = None


class OwnWrites:
    """The timer process's own queue of dialog writes (those of the events it drains), in
    its memory, in the batches a worker's would be in shared memory, each write kept as it
    is with its monotonic ns: the flush takes them with the shared queue's entries, with no
    shared-memory write per event and no encoding or decoding, unless the queue may be near
    its bound (``dialog_queue_max_bytes``: ``entries``); each write is encoded once at most."""

    def __init__(self) -> None:
        self._batches: dict[str, list[_OwnWrite]] = {}
        self._most_bytes = 0
        """At most what ``entries(encoded=True)`` holds, keys and values (exact once all of
        it was encoded)."""

    def add(self, key: str, order_ns: int, write: location.PendingWrite) -> None:
        queued = _OwnWrite(order_ns, write, location.batch_line_most_chars(write))
        batch = self._batches.setdefault(key, [])
        self._most_bytes += queued.chars + (1 if batch else len(key))  # a newline, or the key
        batch.append(queued)

    def most_bytes(self) -> int:
        return self._most_bytes

    def entries(self, encoded: bool) -> list[tuple[str, str]]:
        """The batches as the shared queue's entries ``(key, batch)``; the batches empty
        unless ``encoded`` (only their size is wanted: the flush takes the writes by key)."""
        if not encoded:
            return [(key, "") for key in self._batches]
        return [(key, "\n".join(map(self._line, batch))) for key, batch in self._batches.items()]

    def _line(self, queued: _OwnWrite) -> str:
        if queued.line is None:
            queued.line = location.batch_line(queued.order_ns, queued.write)
            self._most_bytes += len(queued.line) - queued.chars
            queued.chars = len(queued.line)
        return queued.line

    def __contains__(self, key: str) -> bool:
        return key in self._batches

    def writes(self, key: str) -> list[tuple[str, location.PendingWrite]]:
        """The writes of batch ``key``, each after its order key (``location.order_key``)."""
        return [
            (location.order_key(key, location.order_text(queued.order_ns)), queued.write)
            for queued in self._batches[key]
        ]

    def remove(self, key: str) -> None:
        batch = self._batches.pop(key)
        self._most_bytes -= len(key) + len(batch) - 1 + sum(queued.chars for queued in batch)


class DialogWriteBehind:
    """The timer process's side: sends the queued dialog writes of the closed batches to
    Redis, one pipeline per tick, and removes them from the queue once Redis took them (kept
    while it is down)."""

    def __init__(self, settings: Settings, log: Callable[[str], None]) -> None:
        self._settings = settings
        self._log = log
        self.own = OwnWrites()
        """The writes of the dialog events this process drains (``LocationRouting.queueing_in``)."""
        self._store: LocationStore | None = None
        self._guard = Guarded.with_backoff_of(
            settings, ERRORS, log, "Redis (dialog records)", "dialog writes stay queued"
        )
        self.dropped = 0

    @property
    def errors(self) -> int:
        """Failed Redis writes so far (part of ``counterpoise_redis_errors_total``)."""
        return self._guard.errors

    def flush(self) -> None:
        own, max_bytes = self.own, self._settings.location.dialog_queue_max_bytes
        queued = shared.items(htables.DIALOG_WRITES)
        near = location.queue_bytes(queued) + own.most_bytes() > max_bytes
        queued += own.entries(encoded=near)
        if not queued:
            return
        oldest = location.over_bytes(queued, max_bytes) if near else []
        if oldest:
            for key, _ in oldest:
                self._remove(key)
            lost = len(location.batched_writes(oldest))
            self.dropped += lost
            self._log(f"dropped {lost} queued dialog writes ({self.dropped} in all)")
            dropped = set(oldest)
            queued = [item for item in queued if item not in dropped]
        queued = location.closed_batches(queued, clock.monotonic_ms() // location.QUEUE_BATCH_MS)
        if not queued:
            return
        writes = location.latest_writes(
            location.decoded(location.batched_writes(e for e in queued if e[0] not in own))
            + [write for key, _ in queued if key in own for write in own.writes(key)]
        )
        cap = self._settings.location.dialog_records_per_source
        outcomes: list[DialogFlush] = []
        if self._guard.call(
            clock.monotonic_ms(),
            lambda: outcomes.append(self._redis().apply_dialogs(writes, clock.wall_ms(), cap)),
        ):
            for key, _ in queued:
                self._remove(key)
            if outcomes[0].capped:
                EDGE.count(CAPPED_DIALOG, outcomes[0].capped)
            if outcomes[0].forged:
                EDGE.count(FORGED_BYE, outcomes[0].forged)

    def _remove(self, key: str) -> None:
        if key in self.own:
            self.own.remove(key)
        else:
            KSR.htable.sht_rm(htables.DIALOG_WRITES.name, key)

    def _redis(self) -> LocationStore:
        if self._store is None:
            self._store = _open(self._settings, self._settings.redis.redis_timeout_ms)
        return self._store


def _open(settings: Settings, timeout_ms: int) -> LocationStore:
    return LocationStore.open(
        settings.redis.redis_url,
        settings.redis.key_prefix,
        timeout_ms,
        settings.redis.redis_password_file,
    )
