"""The location server's records: registrations, pins and dialogs (``keys.LOCATION_KINDS``).

Every value is a JSON ``core.location.Record``, readable with ``redis-cli get``:
``cp:loc:aor:<user@host>`` (a registration, ``PX`` = the expiry its 2xx granted),
``cp:loc:pin:<user@host>`` and ``cp:loc:domain:<host>`` (operator pins, no expiry),
``cp:loc:dlg:<call-id>`` (a dialog; deleted by its own BYE, else ``dialog_record_ttl_ms``).
A lookup for an initial request is one ``MGET`` of the first three: one round trip.
``cp:loc:src:<source>`` is a ZSET of the Call-IDs whose records a caller address holds,
scored by their expiry (epoch ms): what ``dialog_records_per_source`` is counted on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence

from counterpoise.core.location import PendingWrite, Record, within_cap
from counterpoise.core.untrusted import BadRecord
from counterpoise.store.client import Store
from counterpoise.store.keys import AOR, DIALOG, DOMAIN, LOCATION_KINDS, PIN


@dataclasses.dataclass(frozen=True)
class Entry:
    """One record as listed: its kind, its name (AOR, domain or Call-ID), its value and the
    milliseconds Redis will keep it (-1: no expiry)."""

    kind: str
    name: str
    record: Record | None
    ttl_ms: int


@dataclasses.dataclass(frozen=True)
class DialogFlush:
    """What one flush of queued dialog writes did."""

    written: int = 0
    capped: int = 0
    """Sets refused: their source held ``dialog_records_per_source`` records."""
    deleted: int = 0
    forged: int = 0
    """Deletes refused: the BYE's tags were not those of the record of its Call-ID."""


class LocationStore(Store):
    on_reject: Callable[[str, str], None] = staticmethod(lambda key, reason: None)
    """Called with the key and the reason of each record that is unusable (a hand edit or a
    foreign writer): such a record reads as absent. The SIP workers count them."""

    def key(self, kind: str, name: str) -> str:
        return self.keys.location(kind, name)

    def _record(self, key: str, raw: bytes | None) -> Record | None:
        try:
            return Record.from_json(raw)
        except BadRecord as error:
            self.on_reject(key, str(error))
            return None

    # --- the SIP workers' side ---------------------------------------------------------------

    def lookup(self, aor: str, domain: str) -> tuple[Record | None, Record | None, Record | None]:
        """The AOR pin, the registration record and the domain pin, in one round trip."""
        keys = (self.key(PIN, aor), self.key(AOR, aor), self.key(DOMAIN, domain))
        pin, registration, domain_pin = (
            self._record(key, raw) for key, raw in zip(keys, self.raw.mget(keys), strict=True)
        )
        return pin, registration, domain_pin

    def put(self, kind: str, name: str, record: Record, ttl_ms: int = 0) -> None:
        """Write a record; ``ttl_ms`` > 0 makes Redis delete it by itself after that long."""
        self.client.set(self.key(kind, name), record.to_json(), px=ttl_ms if ttl_ms > 0 else None)

    def get(self, kind: str, name: str) -> Record | None:
        key = self.key(kind, name)
        return self._record(key, self.raw.get(key))

    def delete(self, kind: str, name: str) -> bool:
        return bool(self.client.delete(self.key(kind, name)))

    def apply_dialogs(
        self, writes: Sequence[PendingWrite], now_ms: int, per_source: int
    ) -> DialogFlush:
        """Queued dialog writes, in two pipelined round trips: first what each source holds
        (its expired entries dropped) and the records the deletes name, then the sets that
        fit ``per_source`` and the deletes whose tags are their record's."""
        sets = [write for write in writes if write.record is not None]
        deletes = [write for write in writes if write.record is None]
        sources = sorted({write.source for write in sets})
        with self.raw.pipeline(transaction=False) as pipe:
            for source in sources:
                pipe.zremrangebyscore(self.keys.dialog_source(source), "-inf", now_ms)
                pipe.zcard(self.keys.dialog_source(source))
            if deletes:  # one MGET for every record the deletes name
                pipe.mget([self.key(DIALOG, write.name) for write in deletes])
            found = pipe.execute()
        held = dict(zip(sources, found[1 : 2 * len(sources) : 2], strict=True))
        raws = found[-1] if deletes else []
        records = [
            self._record(self.key(DIALOG, write.name), raw)
            for write, raw in zip(deletes, raws, strict=True)
        ]
        owned = [(w, r) for w, r in zip(deletes, records, strict=True) if w.deletes(r)]
        for _, record in owned:  # a call that ended makes room for the next one
            if record is not None and record.source in held:
                held[record.source] -= 1
        written, capped = within_cap(sets, held, per_source)
        # One ZADD, PEXPIRE and ZREM per source and one DEL per flush, not one per record.
        commands: list[list[str | int]] = []
        added: dict[str, dict[str, int]] = {}
        removed: dict[str, list[str | int]] = {}
        for write in written:
            assert write.record is not None
            commands.append(["SET", self.key(DIALOG, write.name), write.record, "PX", write.ttl_ms])
            added.setdefault(write.source, {})[write.name] = now_ms + write.ttl_ms
        for write, record in owned:
            assert record is not None
            removed.setdefault(record.source, []).append(write.name)
        for source, expiries in added.items():
            key = self.keys.dialog_source(source)
            members = [part for name, ms in expiries.items() for part in (ms, name)]
            # The set expires with its latest record.
            latest_ms = max(expiries.values())
            commands += [["ZADD", key, *members], ["PEXPIRE", key, latest_ms - now_ms]]
        for source, names in removed.items():
            commands.append(["ZREM", self.keys.dialog_source(source), *names])
        if owned:
            commands.append(["DEL", *(self.key(DIALOG, write.name) for write, _ in owned)])
        if commands:
            self.send_all(commands)
        forged = sum(record is not None for record in records) - len(owned)
        return DialogFlush(len(written), len(capped), len(owned), forged)

    # --- the operator's side -----------------------------------------------------------------

    def entries(self, kind: str, name: str) -> list[Entry]:
        """The record of that kind and name, with its remaining time, or nothing."""
        key = self.key(kind, name)
        with self.raw.pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.pttl(key)
            raw, ttl = pipe.execute()
        if raw is None:
            return []
        return [Entry(kind, name, self._record(key, raw), ttl)]

    def scan(self, kinds: tuple[str, ...] = LOCATION_KINDS, batch: int = 500) -> Iterator[Entry]:
        """Every record of the given kinds (SCAN: never blocks Redis, however many there are)."""
        for kind in kinds:
            start = self.key(kind, "")
            keys: list[str] = []
            for key in self.client.scan_iter(match=f"{_glob_escape(start)}*", count=batch):
                keys.append(key)
                if len(keys) >= batch:
                    yield from self._read(kind, start, keys)
                    keys = []
            yield from self._read(kind, start, keys)

    def _read(self, kind: str, start: str, keys: list[str]) -> Iterator[Entry]:
        if not keys:
            return
        with self.raw.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.get(key)
                pipe.pttl(key)
            values = pipe.execute()
        for index, key in enumerate(keys):
            raw, ttl = values[2 * index], values[2 * index + 1]
            if raw is not None:
                yield Entry(kind, key[len(start) :], self._record(key, raw), ttl)


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
