"""The dialog keys in shared memory: the timer process copies the Redis key ring there, and
the SIP workers seal and check Record-Routes with it (``core.dialog_seal``), never waiting on
Redis in a request."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import KSR

from counterpoise import clock
from counterpoise.core import dialog_seal
from counterpoise.core.backoff import Guarded
from counterpoise.core.dialog_seal import DialogKey
from counterpoise.core.settings import Settings
from counterpoise.core.untrusted import BadRecord
from counterpoise.kamailio import htables, shared
from counterpoise.store.client import ERRORS
from counterpoise.store.dialog_keys import DialogKeyStore

RELOAD_MS = 1000
"""How often the ring is read: a rotated key is active ``dialog_seal.ACTIVATION_DELAY_MS``
after it is written, by which time every node that reaches Redis has loaded it."""


class DialogKeyLoader:
    """The timer process's side: reads the ring each ``RELOAD_MS``, creates the first key
    when there is none, and keeps the last ring it read while Redis is away."""

    def __init__(self, settings: Settings, log: Callable[[str], None]) -> None:
        self._settings = settings
        self._log = log
        self._store: DialogKeyStore | None = None
        self._guard = Guarded.with_backoff_of(
            settings, ERRORS, log, "Redis (dialog keys)", "sealing with the keys loaded"
        )
        self._next_ms = 0
        self._rejected: dict[str, str] = {}

    @property
    def errors(self) -> int:
        return self._guard.errors

    def load(self) -> None:
        now_ms = clock.monotonic_ms()
        if now_ms < self._next_ms:
            return
        self._next_ms = now_ms + RELOAD_MS
        self._guard.call(now_ms, self._load)

    def _load(self) -> None:
        store = self._redis()
        ring, rejected = store.ring()
        first = secrets.token_bytes(dialog_seal.SECRET_BYTES)
        if not ring and not rejected and store.create_first(first):
            self._log("created the first dialog key")
            ring, rejected = store.ring()
        for key_id, why in rejected.items():
            if self._rejected.get(key_id) != why:
                self._log(f"dialog key {key_id} left out: {why}")
        self._rejected = rejected
        publish(ring, clock.wall_ms())

    def _redis(self) -> DialogKeyStore:
        if self._store is None:
            self._store = DialogKeyStore.open(
                self._settings.redis.redis_url,
                self._settings.redis.key_prefix,
                self._settings.redis.redis_timeout_ms,
                self._settings.redis.redis_password_file,
            )
        return self._store


def publish(ring: dict[str, DialogKey], now_wall_ms: int) -> None:
    """Make ``ring`` the workers' keys; the signing key is the newest active one."""
    table = htables.DIALOG_KEYS.name
    for key_id, key in ring.items():
        KSR.htable.sht_sets(table, key_id, key.encode())
    for key_id, _ in shared.items(htables.DIALOG_KEYS):
        if key_id not in ring and key_id != htables.DIALOG_SIGNING_KEY:
            KSR.htable.sht_rm(table, key_id)
    current = dialog_seal.signing_key(ring, now_wall_ms)
    if current is not None:
        KSR.htable.sht_sets(table, htables.DIALOG_SIGNING_KEY, current.key_id)


_parsed: dict[tuple[str, str], bytes | None] = {}
"""This process's parsed keys, by id and shared-memory text: a key is parsed once, not at
every seal and check (a rotated key has another id; a rewritten one, another text)."""
PARSED_MAX = 16
"""More than the keys a ring holds at once: the cache is emptied when it grows past this."""


def secret(key_id: str) -> bytes | None:
    """The secret of key ``key_id`` of the ring, None if the node has no such key."""
    value = KSR.htable.sht_get(htables.DIALOG_KEYS.name, key_id)
    if not isinstance(value, str) or key_id == htables.DIALOG_SIGNING_KEY:
        return None
    if (key_id, value) not in _parsed:
        if len(_parsed) >= PARSED_MAX:
            _parsed.clear()
        try:
            _parsed[key_id, value] = dialog_seal.parse_key(key_id, value).secret
        except BadRecord:
            _parsed[key_id, value] = None
    return _parsed[key_id, value]


def signing() -> tuple[str, bytes] | None:
    """The id and secret new Record-Routes are sealed with; None before the first load."""
    key_id = KSR.htable.sht_get(htables.DIALOG_KEYS.name, htables.DIALOG_SIGNING_KEY)
    found = secret(key_id) if isinstance(key_id, str) else None
    return None if found is None else (key_id, found)  # type: ignore[return-value]
