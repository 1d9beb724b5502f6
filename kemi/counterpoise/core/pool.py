"""The operator's pool: one proxy's configuration and the parsing of its stored record.

Pure: the store reads the raw JSON, this module decides what it means and whether it is
usable. A record that does not parse is left out of the pool (only a hand edit can make
one: the CLI validates before it writes).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from collections.abc import Mapping


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
    def from_json(cls, uri: str, text: str) -> ProxyConfig:
        data = json.loads(text)
        weight = float(data.get("weight", 1.0))
        admin = data.get("admin", Admin.ACTIVE)
        if not (math.isfinite(weight) and weight > 0) or admin not in tuple(Admin):
            raise ValueError(f"bad pool record for {uri}: {text!r}")
        return cls(
            uri=uri, base_weight=weight, admin=Admin(admin), added_ms=int(data.get("added_ms", 0))
        )


def parse_pool(records: Mapping[str, str]) -> dict[str, ProxyConfig]:
    """The operator's list from the ``cp:pool`` hash; a record that does not parse is left
    out rather than stopping the sync."""
    pool = {}
    for uri, text in records.items():
        try:
            pool[uri] = ProxyConfig.from_json(uri, text)
        except (ValueError, TypeError, AttributeError):
            continue
    return pool
