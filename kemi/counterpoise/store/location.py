"""The location server's records: registrations, pins and dialogs (``keys.LOCATION_KINDS``).

Every value is a JSON ``core.location.Record``, readable with ``redis-cli get``:
``cp:loc:aor:<user@host>`` (a registration, ``PX`` = the expiry its 2xx granted),
``cp:loc:pin:<user@host>`` and ``cp:loc:domain:<host>`` (operator pins, no expiry),
``cp:loc:dlg:<call-id>`` (a dialog; deleted by the BYE, else ``dialog_record_ttl_ms``).
A lookup for an initial request is one ``MGET`` of the first three: one round trip.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence

from counterpoise.core.location import PendingWrite, Record
from counterpoise.core.untrusted import BadRecord
from counterpoise.store.client import Store
from counterpoise.store.keys import AOR, DOMAIN, LOCATION_KINDS, PIN


@dataclasses.dataclass(frozen=True)
class Entry:
    """One record as listed: its kind, its name (AOR, domain or Call-ID), its value and the
    milliseconds Redis will keep it (-1: no expiry)."""

    kind: str
    name: str
    record: Record | None
    ttl_ms: int


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

    def apply(self, kind: str, writes: Sequence[PendingWrite]) -> None:
        """Queued writes of one kind, in one pipelined round trip."""
        with self.client.pipeline(transaction=False) as pipe:
            for write in writes:
                key = self.key(kind, write.name)
                if write.record is None:
                    pipe.delete(key)
                else:
                    pipe.set(key, write.record, px=write.ttl_ms if write.ttl_ms > 0 else None)
            pipe.execute()

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
