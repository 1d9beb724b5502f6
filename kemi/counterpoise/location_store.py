"""Redis: the location server's records and their key schema.

Key schema (``cp:`` is ``Settings.key_prefix``); README "Redis layout" documents the same.
Every value is a JSON ``Record`` (``location.Record``), readable with ``redis-cli get``:

``cp:loc:aor:<user@host>``    STRING ``{"proxy", "since_ms", "expires_ms"}``: the proxy that
                                    gave the last 2xx to a REGISTER of that AOR; ``PX`` = the
                                    expiry that 2xx granted, so it disappears with the binding.
``cp:loc:pin:<user@host>``    STRING ``{"proxy", "since_ms"}``: operator pin of an AOR; no expiry.
``cp:loc:domain:<host>``      STRING ``{"proxy", "since_ms"}``: operator pin of a domain; no expiry.
``cp:loc:dlg:<call-id>``      STRING ``{"proxy", "since_ms", "expires_ms", "from_tag",
                                    "to_tag"}``: the proxy that answered the INVITE with 2xx;
                                    deleted by the BYE, else ``PX`` = ``dialog_record_ttl_ms``.

A lookup for an initial request is one ``MGET`` of the first three: one round trip.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import redis

from counterpoise.location import PendingWrite, Record
from counterpoise.settings import Settings
from counterpoise.store import connect

AOR, PIN, DOMAIN, DIALOG = "aor", "pin", "domain", "dlg"
KINDS = (PIN, AOR, DOMAIN, DIALOG)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One record as listed: its kind, its name (AOR, domain or Call-ID), its value and the
    milliseconds Redis will keep it (-1: no expiry)."""

    kind: str
    name: str
    record: Record | None
    ttl_ms: int


class LocationStore:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = f"{prefix}loc:"

    @classmethod
    def open(cls, settings: Settings, timeout_ms: int) -> LocationStore:
        """A store on a new connection to ``settings.redis_url``, each call bounded by
        ``timeout_ms``."""
        return cls(connect(settings.redis_url, timeout_ms), settings.key_prefix)

    def key(self, kind: str, name: str) -> str:
        return f"{self.prefix}{kind}:{name}"

    # --- the SIP workers' side ---------------------------------------------------------------

    def lookup(self, aor: str, domain: str) -> tuple[Record | None, Record | None, Record | None]:
        """The AOR pin, the registration record and the domain pin, in one round trip."""
        pin, registration, domain_pin = self.client.mget(
            self.key(PIN, aor), self.key(AOR, aor), self.key(DOMAIN, domain)
        )
        return Record.from_json(pin), Record.from_json(registration), Record.from_json(domain_pin)

    def put(self, kind: str, name: str, record: Record, ttl_ms: int = 0) -> None:
        """Write a record; ``ttl_ms`` > 0 makes Redis delete it by itself after that long."""
        self.client.set(self.key(kind, name), record.to_json(), px=ttl_ms if ttl_ms > 0 else None)

    def get(self, kind: str, name: str) -> Record | None:
        return Record.from_json(self.client.get(self.key(kind, name)))

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
        with self.client.pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.pttl(key)
            text, ttl = pipe.execute()
        if text is None:
            return []
        return [Entry(kind, name, Record.from_json(text), ttl)]

    def scan(self, kinds: tuple[str, ...] = KINDS, batch: int = 500) -> Iterator[Entry]:
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
        with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.get(key)
                pipe.pttl(key)
            values = pipe.execute()
        for index, key in enumerate(keys):
            text, ttl = values[2 * index], values[2 * index + 1]
            if text is not None:
                yield Entry(kind, key[len(start) :], Record.from_json(text), ttl)


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
