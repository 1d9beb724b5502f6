"""A proxy's in-flight limit while shedding is on (``shed_hold_ms`` > 0): the requests its
workers are busy with plus ``shed_queue_ms`` of queue, instead of ``hold_queue_ms`` of queue
(``timers.inflight_limit``).

Why: the hold limit lets each proxy queue ``hold_queue_ms`` of its own work before the
balancer holds a request, and every call admitted past the pool's capacity waits in that
queue. With shedding on, the balancer turns the excess away once its own queue holds
``shed_hold_ms`` of the pool's work, and a held request goes to the first proxy with room:
a queue at the proxy then only adds to every admitted call's wait. The proxy needs no more
than enough to stay busy until the next release tick brings it the next request.

The rule, from the service estimate (``service``: ``S`` the proxy's work per request, ``W``
its queue wait):

* the **limit** is ``max(HOLD_MIN_INFLIGHT, ceil(throughput_per_s * (S + shed_queue_ms) /
  1000))``, never above the hold limit (so with a small ``hold_queue_ms`` nothing changes):
  its concurrency ``throughput * S`` (Little's law), plus ``shed_queue_ms`` of its
  throughput queued behind;
* the limit holds **new** requests back, not only released ones, while the pool is past its
  capacity: the node shed a request within ``PAST_CAPACITY_MEMORY_MS`` (``PastCapacity``),
  or, before the first shed, the proxy's queue wait ``W`` stands past ``STANDING_FRACTION``
  of ``shed_queue_ms`` (``holds_new``): as in CoDel, a queue is judged by the wait it
  causes, and a wait that persists past the target is a standing queue, not a burst. Below
  the pool's capacity nothing is shed, the queues drain between calls, and the limit holds
  no new request back, so a step in the offered load is not held to the throughput
  measured before it;
* without a service estimate yet, the hold limit applies, as with shedding off.

Why it cannot starve a proxy: the limit is above the proxy's concurrency at its measured
throughput. A proxy given fewer requests than it could take has no queue, so each of them
completes in ``S``, and its next throughput is ``limit / S = throughput * (S +
shed_queue_ms) / S``: more than before, until its workers are all busy. A limit of so much
queue (``hold_queue_ms``) has no such floor: below the concurrency, the throughput it lets
through is less than the one it was computed from, the limit falls with it, and a pool past
its capacity sheds calls its proxies could have taken.

Pure: the estimates are passed in.
"""

from __future__ import annotations

import dataclasses
import math

from counterpoise.core.hold import HOLD_MIN_INFLIGHT
from counterpoise.core.policy.service import Service
from counterpoise.core.settings import TimerSettings

STANDING_FRACTION = 0.5
"""A queue wait past half of ``shed_queue_ms`` stands: below what the limit lets queue, so
the limit that holds the queue at ``shed_queue_ms`` keeps holding new requests back instead
of letting them through each time the queue shrinks a little."""


def shedding(settings: TimerSettings) -> bool:
    """Whether a full pool sheds (``admission.sheds``), so these limits apply."""
    return settings.shed_hold_ms > 0 and settings.hold_queue_ms > 0


def inflight_limit(
    throughput_per_s: float, service: Service, hold_limit: int, settings: TimerSettings
) -> int:
    """The in-flight count at which a proxy completing ``throughput_per_s`` requests a second
    takes no more; ``hold_limit`` (``timers.inflight_limit``) when shedding is off or its
    service time is not known yet."""
    if not shedding(settings) or service.service_ms is None:
        return hold_limit
    queued_ms = service.service_ms + settings.shed_queue_ms
    limit = max(HOLD_MIN_INFLIGHT, math.ceil(throughput_per_s * queued_ms / 1000))
    return min(limit, hold_limit)


PAST_CAPACITY_MEMORY_MS = 2000
"""How long after a shed the pool counts as past its capacity: past it by a tenth, a 70
calls/s pool sheds a request every 140 ms, so ten sync ticks without one say the load came
back under the capacity; and a limit that let new requests through between two sheds would
let them fill the proxies' queues again."""


@dataclasses.dataclass(frozen=True)
class PastCapacity:
    """The node's count of shed requests (the ``shed`` counter) as the latest tick read it,
    and when it last grew."""

    sheds: int = 0
    last_shed_ms: int | None = None

    def observe(self, sheds: int, now_ms: int) -> PastCapacity:
        """After a tick that read ``sheds``."""
        if sheds == self.sheds:
            return self
        return PastCapacity(sheds, now_ms)

    def lately(self, now_ms: int) -> bool:
        """A request was shed within ``PAST_CAPACITY_MEMORY_MS``."""
        return self.last_shed_ms is not None and now_ms - self.last_shed_ms < (
            PAST_CAPACITY_MEMORY_MS
        )


def holds_new(service: Service, past_capacity: bool, settings: TimerSettings) -> bool:
    """Whether the proxy's limit holds new requests back while shedding is on: the pool is
    ``past_capacity`` (``PastCapacity.lately``), or the proxy's queue wait stands past the
    target."""
    standing = service.wait_ms >= settings.shed_queue_ms * STANDING_FRACTION
    return shedding(settings) and (past_capacity or standing)
