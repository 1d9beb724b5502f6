"""The key ring that seals the balancer's Record-Routes (``core.dialog_seal``), in Redis.

One hash shared by every node: a node that finds it empty creates the first key
(``HSETNX``: two nodes starting at once agree on one); the administrator's
``counterpoise dialog-key rotate`` adds the next one and drops the oldest. Only the balancer
role and the administrator may read it (``redis/users.acl``).
"""

from __future__ import annotations

from typing import cast

import redis

from counterpoise.core import dialog_seal
from counterpoise.core.dialog_seal import DialogKey
from counterpoise.core.untrusted import BadRecord
from counterpoise.store.client import ERRORS, Store

FIRST_KEY_ID = "1"


class DialogKeyStore(Store):
    errors = ERRORS

    def ring(self) -> tuple[dict[str, DialogKey], dict[str, str]]:
        """The usable keys by id, and the fields that are not one (id -> why)."""
        return parse_ring(self.client.hgetall(self.keys.dialog_keys))

    def create_first(self, secret: bytes) -> bool:
        """Store the first key, active at once, unless a key ring exists already."""
        first = DialogKey(FIRST_KEY_ID, 0, secret)
        return bool(self.client.hsetnx(self.keys.dialog_keys, FIRST_KEY_ID, first.encode()))

    def rotate(self, secret: bytes, active_from_ms: int) -> tuple[DialogKey, list[str]]:
        """Add the next key (nodes sign with it from ``active_from_ms``) and drop the oldest,
        in one transaction that fails if another rotation got there first."""
        with self.client.pipeline() as pipe:
            pipe.watch(self.keys.dialog_keys)
            # After WATCH a pipeline runs each command at once and returns its reply.
            current = cast(dict[str, str], pipe.hgetall(self.keys.dialog_keys))
            ring, _ = parse_ring(current)
            new, dropped = dialog_seal.rotated(ring, secret, active_from_ms)
            pipe.multi()
            pipe.hset(self.keys.dialog_keys, new.key_id, new.encode())
            if dropped:
                pipe.hdel(self.keys.dialog_keys, *dropped)
            try:
                pipe.execute()
            except redis.WatchError:
                raise redis.RedisError("another rotation ran at once; run it again") from None
        return new, dropped


def parse_ring(fields: dict[str, str]) -> tuple[dict[str, DialogKey], dict[str, str]]:
    """The hash's fields as keys by id, and the fields that are no key (id -> why)."""
    keys: dict[str, DialogKey] = {}
    rejected: dict[str, str] = {}
    for key_id, value in fields.items():
        try:
            keys[key_id] = dialog_seal.parse_key(key_id, value)
        except BadRecord as error:
            rejected[key_id] = str(error)
    return keys, rejected
