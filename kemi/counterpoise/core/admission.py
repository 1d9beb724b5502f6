"""Admission: whether a new initial request that finds the pool full is answered 503 at once
(shed) instead of held at the balancer (``core.hold``).

Pure arithmetic: no Kamailio, no Redis; the held count and the limits are passed in.

Why shed: holding smooths a burst and carries the pool through a proxy's stall, but past the
pool's capacity the queue only grows, and every call waits in it, the ones that will be
answered too. The pool's capacity is already known: each proxy's hold limit is its
completed requests per second times ``hold_queue_ms`` (``hold.inflight_limit``), so the
hold limits of the weighted proxies add up to what the pool drains in ``hold_queue_ms``.
Scaling the limits (a node's share of an active-active pool) scales admission with them.
While shedding is on, the limit that gates each proxy is tighter (``policy.shed_limit``:
its workers' requests plus ``shed_queue_ms`` of queue), so the admitted calls wait at the
balancer, where the excess is turned away, rather than in the proxies' queues.

The rule, for a new request that found no proxy with room (``hold.admit`` gave None):

* it is **shed** when the requests already held take the pool at least ``shed_hold_ms`` to
  drain: ``held * hold_queue_ms >= sum(limits) * shed_hold_ms``;
* it is **held** as before while a proxy out of the weighting may come back
  (``may_return``): a stalled or restarting proxy takes the backlog within seconds, and
  answering every call then beats turning the excess away;
* nothing is shed when ``shed_hold_ms`` is 0 or holding is off.

So the hold queue keeps at most ``shed_hold_ms`` of the pool's work: enough to keep every
proxy fed between two release ticks, and each admitted call waits at most that at the
balancer on top of its proxy's own queue (``shed_queue_ms``).

The node itself may be what is short: its SIP workers then leave datagrams unread in the
kernel's receive queue of its UDP sockets, which the timer process reads each sync tick
(``receive_backlog_bytes``, from ``/proc/net/udp``). While the backlog is past
``shed_node_backlog_kb`` at two ticks in a row, the share of new initial requests answered
503 on arrival grows by ``NODE_SHED_STEP_UP_PERCENT`` a tick; otherwise it shrinks by
``NODE_SHED_STEP_DOWN_PERCENT`` (``next_node_shed_percent``): RFC 7339's loss algorithm, run
by the node on itself, so a 503 that costs a worker little replaces a call it cannot carry.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from counterpoise.core.hold import Limit
from counterpoise.core.policy.health import State
from counterpoise.core.settings import TimerSettings


def sheds(held: int, limits: Iterable[Limit], returning: bool, settings: TimerSettings) -> bool:
    """Whether a new request that found no proxy with room is answered 503 now: ``held``
    requests wait already, ``limits`` are those of the weighted proxies, ``returning``
    says a proxy out of the weighting may come back."""
    if settings.shed_hold_ms <= 0 or settings.hold_queue_ms <= 0 or returning:
        return False
    drained_in_hold_queue_ms = sum(limit.drained_in_hold_queue_ms for limit in limits)
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


NODE_SHED_STEP_UP_PERCENT = 10
"""A tick (200 ms) of backlog sheds 10 points more: half the new calls within a second."""
NODE_SHED_STEP_DOWN_PERCENT = 5
"""A tick without sheds 5 points less: slower down than up, so the share settles where the
workers keep up instead of swinging between all and nothing."""


def receive_backlog_bytes(proc_net_udp: str, ports: frozenset[int]) -> int:
    """Bytes waiting unread in the receive queues of the sockets bound to ``ports``, from the
    text of ``/proc/net/udp`` or ``/proc/net/udp6``."""
    total = 0
    for line in proc_net_udp.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 5 or ":" not in fields[1] or ":" not in fields[4]:
            continue
        try:
            port = int(fields[1].rsplit(":", 1)[1], 16)
            queued = int(fields[4].split(":", 1)[1], 16)
        except ValueError:
            continue
        if port in ports:
            total += queued
    return total


def next_node_shed_percent(percent: int, backlogs: Sequence[int], settings: TimerSettings) -> int:
    """The share of new initial requests to shed after a tick, from the share before and the
    backlog (``receive_backlog_bytes``) of the latest ticks, oldest first."""
    if settings.shed_node_backlog_kb <= 0:
        return 0
    threshold = settings.shed_node_backlog_kb * 1024
    if len(backlogs) >= 2 and min(backlogs[-2:]) >= threshold:
        return min(100, percent + NODE_SHED_STEP_UP_PERCENT)
    return max(0, percent - NODE_SHED_STEP_DOWN_PERCENT)


def node_sheds(percent: int, draw: float) -> bool:
    """Whether this request is one of the ``percent`` shed; ``draw`` uniform in [0, 1)."""
    return draw * 100 < percent
