"""The operator's pool: one proxy's configuration and the parsing of its stored record.

Pure: the store reads the raw bytes, this module decides what they mean and whether they are
usable. Redis is shared by every node, agent and operator, so nothing read from it is
trusted: a record that does not parse, or parses to something out of range, is left out of
the pool with the reason why, and the rest of the pool is used (``parse_pool``). The CLI
validates before it writes, so only a hand edit or a foreign writer makes a bad record.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import math
from collections.abc import Mapping

from counterpoise.core.sipuri import parse_proxy_uri
from counterpoise.core.untrusted import BadRecord, untrusted

MIN_BASE_WEIGHT = 0.001
MAX_BASE_WEIGHT = 1_000_000.0
"""Range of a base weight. Weights are relative: 1e9 between the smallest and the largest is
more than any deployment needs, and the bound keeps the selection's prefix sums finite and
exact to well under one part in 1e6 (1000 proxies at the maximum sum to 1e9, far from the
1e308 at which a float overflows, which would send every request to the last proxy)."""

MAX_RECORD_BYTES = 1024
"""Largest stored pool record accepted; a real one is about 60 bytes. Refused before JSON
parses it, which also bounds how deeply a hand edit can nest it."""

MAX_EPOCH_MS = 2**53
"""Largest ``added_ms`` accepted: exact as a float, about 285,000 years after 1970."""


class Admin(enum.StrEnum):
    """What the operator set: ``active`` proxies take new requests, ``drained`` ones take
    only the in-dialog requests of dialogs they already hold."""

    ACTIVE = "active"
    DRAINED = "drained"


@dataclasses.dataclass(frozen=True)
class ProxyConfig:
    """What the operator set for one proxy."""

    uri: str
    base_weight: float = 1.0
    admin: Admin = Admin.ACTIVE
    added_ms: int = 0

    def to_json(self) -> str:
        return json.dumps(
            {"weight": self.base_weight, "admin": str(self.admin), "added_ms": self.added_ms},
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, uri: str, text: str | bytes) -> ProxyConfig:
        """The record of ``uri``, checked; ``BadRecord`` saying why it is unusable."""
        return untrusted(lambda: _parse_config(uri, text))


def check_base_weight(weight: object) -> float:
    """``weight`` as a base weight, or ``BadRecord`` (also used by the CLI before it writes)."""
    if isinstance(weight, bool) or not isinstance(weight, int | float):
        raise BadRecord(f"weight {weight!r} is not a number")
    if not (math.isfinite(weight) and MIN_BASE_WEIGHT <= weight <= MAX_BASE_WEIGHT):
        raise BadRecord(f"weight {weight!r} is outside {MIN_BASE_WEIGHT:g}..{MAX_BASE_WEIGHT:g}")
    return float(weight)


PROXY_URIS_MEMO = 1024
"""Proxy URIs whose check a process remembers: a pool has a few, and every location record
names one of them, so a record costs a dict lookup, not a regular expression."""


@functools.lru_cache(maxsize=PROXY_URIS_MEMO)
def check_proxy_uri(uri: str) -> str:
    """A stored proxy URI must be one the CLI would have written: a valid SIP URI already in
    its normal form, so no comma (a URI list's separator), CR or LF (it would be
    written into a ``Route`` header) can reach the routing."""
    if parse_proxy_uri(uri) != uri:
        raise BadRecord(f"{uri!r} is not a proxy URI in normal form")
    return uri


def parse_version(raw: object) -> int | None:
    """``cp:pool:version`` as an integer (absent: 0), or None when it is not one (a hand edit):
    the caller then cannot tell a change and reloads the pool every time."""
    if raw is None:
        return 0
    try:
        text = raw.decode("ascii") if isinstance(raw, bytes) else str(raw)
        return int(text) if text.lstrip("-").isdigit() and len(text) <= 20 else None
    except ValueError:
        return None


def parse_pool(
    records: Mapping[str, str] | Mapping[bytes, bytes],
) -> tuple[dict[str, ProxyConfig], dict[str, str]]:
    """The operator's list from the ``cp:pool`` hash, and the records left out: proxy URI (as
    far as it decodes) -> why. One bad record never stops the rest from being used."""
    pool: dict[str, ProxyConfig] = {}
    rejected: dict[str, str] = {}
    for key, text in records.items():
        uri = _text(key) if isinstance(key, bytes) else key
        try:
            pool[uri] = ProxyConfig.from_json(uri, text)
        except BadRecord as error:
            rejected[uri] = str(error)
    return pool, rejected


def _parse_config(uri: str, text: str | bytes) -> ProxyConfig:
    if len(text) > MAX_RECORD_BYTES:
        raise BadRecord(f"{len(text)} bytes, more than {MAX_RECORD_BYTES}")
    check_proxy_uri(uri)
    data = json.loads(text)
    if not isinstance(data, dict):
        raise BadRecord(f"not a JSON object: {type(data).__name__}")
    admin = data.get("admin", Admin.ACTIVE)
    if admin not in tuple(Admin):
        raise BadRecord(f"admin {admin!r} is neither {' nor '.join(Admin)}")
    added_ms = data.get("added_ms", 0)
    if isinstance(added_ms, bool) or not isinstance(added_ms, int):
        raise BadRecord(f"added_ms {added_ms!r} is not an integer")
    if not 0 <= added_ms <= MAX_EPOCH_MS:
        raise BadRecord(f"added_ms {added_ms} is outside 0..{MAX_EPOCH_MS}")
    weight = check_base_weight(data.get("weight", 1.0))
    return ProxyConfig(uri=uri, base_weight=weight, admin=Admin(admin), added_ms=added_ms)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="backslashreplace")
