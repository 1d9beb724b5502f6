"""The routing table: what the sync loop tells every SIP worker of each proxy with a weight.

The sync loop encodes it into the node's shared memory when it changes; each SIP worker
decodes it once per change and routes with it until the next. It is JSON objects with named
fields, so ``kamcmd htable.get cp table`` reads as it is.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence


@dataclasses.dataclass(frozen=True)
class RoutingEntry:
    """One proxy of the routing table."""

    uri: str
    weight: float
    """Its share of new requests (``policy``)."""
    queueing: bool
    """Whether its ``inflight_limit`` holds new requests back (``core.hold``)."""
    inflight_limit: int
    """Requests in flight to it at which new ones are held while it is queueing; 0 when
    holding is off."""
    long_wait: bool
    """Whether its requests wait ``saturated_fr_timer_ms`` for a first reply instead of
    ``fr_timer_ms`` (``policy.timers.first_reply_timeout_ms``; the worker's settings give both)."""
    returning: bool = False
    """Out of the weighting for a moment only (``admission.may_return``): while a proxy is,
    a full pool holds new requests instead of shedding them."""
    set_aside: bool = False
    """Whether it weighs 0 only for its silence (still ``up``): its location holders' requests
    may still go to it (``location.decide``)."""
    hold_limit: int = 0
    """While shedding is on, what it completes in ``hold_queue_ms``: the limit of new requests
    while it is not queueing (``inflight_limit`` being the tighter ``policy.shed_limit``),
    and its part of the backlog held before shedding; 0: shedding is off."""


def encode(entries: Sequence[RoutingEntry]) -> str:
    return json.dumps([dataclasses.asdict(entry) for entry in entries])


def decode(text: str) -> list[RoutingEntry]:
    return [
        RoutingEntry(
            uri=str(fields["uri"]),
            weight=float(fields["weight"]),
            queueing=bool(fields["queueing"]),
            inflight_limit=int(fields["inflight_limit"]),
            long_wait=bool(fields["long_wait"]),
            returning=bool(fields["returning"]),
            set_aside=bool(fields["set_aside"]),
            hold_limit=int(fields.get("hold_limit", 0)),
        )
        for fields in json.loads(text)
    ]
