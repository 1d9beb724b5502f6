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


def derived_entries(key: DialogKey) -> dict[str, str]:
    """The entries holding key ``key``'s inner and outer keys, which the config signs with."""
    inner, outer = dialog_seal.derived_keys(key.secret)
    return {
        htables.DIALOG_KEY_INNER + key.key_id: inner,
        htables.DIALOG_KEY_OUTER + key.key_id: outer,
    }


def publish(ring: dict[str, DialogKey], now_wall_ms: int) -> None:
    """Make ``ring`` the workers' keys; the signing key is the newest active one, written
    after the keys (a route that reads its id finds its secret). The
    published version moves only when a key or the signing key changed: every worker then
    reads the ring anew (``WorkerKeys``), so a removed key stops verifying at its next
    request."""
    table = htables.DIALOG_KEYS.name
    shown = dict(shared.items(htables.DIALOG_KEYS))
    wanted = {key_id: key.encode() for key_id, key in ring.items()}
    for key in ring.values():
        wanted.update(derived_entries(key))
    current = dialog_seal.signing_key(ring, now_wall_ms)
    if current is not None:
        wanted[htables.DIALOG_SIGNING_KEY] = current.key_id
    elif htables.DIALOG_SIGNING_KEY in shown:  # kept: a ring with no active key seals as before
        wanted[htables.DIALOG_SIGNING_KEY] = shown[htables.DIALOG_SIGNING_KEY]
    if wanted == shown:
        return
    for key_id, text in wanted.items():
        if shown.get(key_id) != text:
            KSR.htable.sht_sets(table, key_id, text)
    for key_id in shown.keys() - wanted.keys():
        KSR.htable.sht_rm(table, key_id)
    shared.bump_version()


PARSED_MAX = 16
"""More than the keys a ring holds at once: the copy is emptied when it grows past this
(ids nobody published cost a read each, never memory)."""
_UNREAD = ("", b"")


class WorkerKeys:
    """One process's copy of the keys it used, valid for one published version
    (``shared.WorkerView.version``): a seal or a check costs no shared-memory read while the
    ring is unchanged, and a key is parsed once per version."""

    def __init__(self) -> None:
        self._version: object = object()
        self._secrets: dict[str, bytes | None] = {}
        self._signing: tuple[str, bytes] | None = _UNREAD

    def follow(self, version: object) -> None:
        """Forget the copy when the published version moved (called with each refresh)."""
        if version != self._version:
            self._version, self._secrets, self._signing = version, {}, _UNREAD

    def secret(self, key_id: str) -> bytes | None:
        """The secret of key ``key_id`` of the ring, None if the node has no such key."""
        if key_id not in self._secrets:
            if len(self._secrets) >= PARSED_MAX:
                self._secrets.clear()
            self._secrets[key_id] = _read_secret(key_id)
        return self._secrets[key_id]

    def signing(self) -> tuple[str, bytes] | None:
        """The id and secret new Record-Routes are sealed with; None before the first load."""
        if self._signing is _UNREAD:
            key_id = KSR.htable.sht_get(htables.DIALOG_KEYS.name, htables.DIALOG_SIGNING_KEY)
            found = self.secret(key_id) if isinstance(key_id, str) else None
            self._signing = None if found is None else (str(key_id), found)
        return self._signing


def _read_secret(key_id: str) -> bytes | None:
    value = KSR.htable.sht_get(htables.DIALOG_KEYS.name, key_id)
    if not isinstance(value, str) or key_id == htables.DIALOG_SIGNING_KEY:
        return None
    try:
        return dialog_seal.parse_key(key_id, value).secret
    except BadRecord:
        return None
