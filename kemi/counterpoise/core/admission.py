"""Admission: whether a new initial request that finds the pool full is answered 503 at once
(shed) instead of held at the balancer (``core.hold``).

Pure arithmetic: no Kamailio, no Redis; the held count and the limits are passed in.

Why shed: holding smooths a burst and carries the pool through a proxy's stall, but past the
pool's capacity the queue only grows, and every call waits in it, the ones that will be
answered too. The pool's capacity is already known: each proxy's in-flight limit is its
completed requests per second times ``hold_queue_ms`` (``hold.inflight_limit``), so the
limits of the weighted proxies add up to what the pool drains in ``hold_queue_ms``. Scaling
the limits (a node's share of an active-active pool) scales admission with them.

The rule, for a new request that found no proxy with room (``hold.admit`` gave None):

* it is **shed** when the requests already held take the pool at least ``shed_hold_ms`` to
  drain: ``held * hold_queue_ms >= sum(limits) * shed_hold_ms``;
* it is **held** as before while a proxy out of the weighting may come back
  (``may_return``): a stalled or restarting proxy takes the backlog within seconds, and
  answering every call then beats turning the excess away;
* nothing is shed when ``shed_hold_ms`` is 0 or holding is off.

So the hold queue keeps at most ``shed_hold_ms`` of the pool's work: enough to keep every
proxy fed between two release ticks, and each admitted call waits at most that at the
balancer on top of its proxy's own queue (``hold_queue_ms``).
"""

from __future__ import annotations

from collections.abc import Iterable

from counterpoise.core.hold import Limit
from counterpoise.core.policy.health import State
from counterpoise.core.settings import TimerSettings


def sheds(held: int, limits: Iterable[Limit], returning: bool, settings: TimerSettings) -> bool:
    """Whether a new request that found no proxy with room is answered 503 now: ``held``
    requests wait already, ``limits`` are those of the weighted proxies, ``returning``
    says a proxy out of the weighting may come back."""
    if settings.shed_hold_ms <= 0 or settings.hold_queue_ms <= 0 or returning:
        return False
    drained_in_hold_queue_ms = sum(limit.inflight for limit in limits)
    return held * settings.hold_queue_ms >= drained_in_hold_queue_ms * settings.shed_hold_ms


def may_return(
    weight: float, state: State, last_life_ms: int | None, now_ms: int, settings: TimerSettings
) -> bool:
    """Whether a proxy is out of the weighting for a moment only: no weight, not drained by
    the operator, and heard from within ``shed_outage_grace_ms``."""
    return (
        weight <= 0
        and state != State.DRAINED
        and last_life_ms is not None
        and now_ms - last_life_ms < settings.shed_outage_grace_ms
    )
