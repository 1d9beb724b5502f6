"""Holding requests at the balancer while every proxy is queueing: when to, and whom to release.

Pure arithmetic: no Kamailio, no Redis; in-flight counts and ages are passed in.

Why hold: a request sent on arrival to a proxy that is already queueing waits in that
proxy's socket queue, where nothing can move it, even when another proxy frees up or comes
back a second later; and the proxy's replies to its earlier calls (the callee's 200, a
BYE's answer) queue behind it. Held at the balancer instead, the calls beyond the pool's
capacity wait in one queue, in order, and each goes to the first proxy with room: a proxy
back from a stall or a restart takes the backlog at once, where otherwise it sat in the
others' queues for seconds. It is HAProxy's ``maxconn`` per server with a queue in front.

The rule:

* A proxy's **limit** is the in-flight count at which its queue wait (in flight over
  completed per second, as ``policy.latency.queue_wait_ms``) reaches ``hold_queue_ms``:
  ``max(HOLD_MIN_INFLIGHT, ceil(throughput_per_s * hold_queue_ms / 1000))``.
* A new request is **held** when requests are already held (it joins the back of the queue)
  or when the proxy it drew and every other proxy with a weight is queueing and at its limit.
  A proxy that is not queueing has room for a new request: its in-flight requests may be
  calls its workers are busy with, not a queue. While shedding is on, the limit of a
  proxy not queueing is its hold limit, and the limit of a queueing one the tighter
  ``policy.shed_limit``: the excess is turned away at the balancer, so nothing is gained
  by letting a proxy's queue grow before the limit applies.
* Each release tick takes held requests in order, each to the proxy with the most room
  under its limit (queueing or not: a proxy back from a death gets its backlog at the pace
  its limit allows, not all at once), and stops at the first that finds none, unless it was
  held ``hold_max_ms``: then it goes to the least loaded proxy anyway (a hold never loses a
  call).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterable

HOLD_MIN_INFLIGHT = 2
"""The smallest limit: a proxy whose throughput estimate is still small (new, or barely
used) may always have 2 requests in flight, so a hold never starves it of the requests that
would show its capacity."""


@dataclasses.dataclass(frozen=True)
class Limit:
    """What the routing table says of one proxy for holding."""

    inflight: int
    """Its limit; 0 when holding is off (``hold_queue_ms = 0``)."""
    queueing: bool
    """Queueing now (``policy.timers.queueing``), or its queue wait stands while shedding
    (``policy.shed_limit.holds_new``): only then does its limit hold new requests."""
    hold_inflight: int = 0
    """While shedding is on, its hold limit (``inflight_limit``: what it completes in
    ``hold_queue_ms``), which holds new requests even while it is not queueing, its
    ``inflight`` being the tighter ``policy.shed_limit``; 0: shedding is off."""

    @property
    def drained_in_hold_queue_ms(self) -> int:
        """Requests it completes in ``hold_queue_ms``: its part of the backlog a full pool
        holds before it sheds (``admission.sheds``)."""
        return self.hold_inflight or self.inflight


def inflight_limit(throughput_per_s: float, hold_queue_ms: int) -> int:
    """The in-flight count at which a proxy completing ``throughput_per_s`` requests a second
    has a queue of ``hold_queue_ms``; 0 (no limit) when holding is off."""
    if hold_queue_ms <= 0:
        return 0
    return max(HOLD_MIN_INFLIGHT, math.ceil(throughput_per_s * hold_queue_ms / 1000))


def room(limit: Limit | None, inflight: Callable[[], int], releasing: bool) -> float:
    """How much room a proxy has, as the fraction of its limit still free (``inf`` when no
    limit applies): a released request is limited by any proxy's limit, a new one
    (``releasing`` False) by a queueing proxy's, or else by its hold limit while shedding
    is on (``Limit.hold_inflight``). ``inflight`` is asked only when a limit applies: a
    proxy that is not queueing costs a new request no count read while shedding is off."""
    if limit is None or limit.inflight <= 0:
        return math.inf
    bound = limit.inflight if limit.queueing or releasing else limit.hold_inflight
    if bound <= 0:
        return math.inf
    return (bound - inflight()) / bound


def roomiest(
    uris: Iterable[str],
    limits: dict[str, Limit],
    inflight: Callable[[str], int],
    releasing: bool,
) -> str | None:
    """Of ``uris``, the proxy with the most room left, or None when none has any."""
    best, best_room = None, 0.0
    for uri in uris:
        free = room(limits.get(uri), functools.partial(inflight, uri), releasing)
        if free > best_room:
            best, best_room = uri, free
    return best


def admit(
    picked: str,
    uris: Iterable[str],
    limits: dict[str, Limit],
    inflight: Callable[[str], int],
    held: int,
) -> str | None:
    """Where a new request goes now: ``picked`` (the weighted draw) if it has room, else the
    proxy with the most room; None to hold it (``held`` requests wait already, or no proxy
    has room)."""
    if held > 0:
        return None
    if room(limits.get(picked), functools.partial(inflight, picked), releasing=False) > 0:
        return picked
    return roomiest(uris, limits, inflight, releasing=False)


def overdue(held_ms: int, hold_max_ms: int) -> bool:
    """Held long enough: it goes to a proxy now, room or not."""
    return held_ms >= hold_max_ms
