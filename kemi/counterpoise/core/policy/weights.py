"""The weights: every part of the policy composed into one number per proxy.

The weight of an active (not drained) proxy that is not down is::

    weight = base_weight * (L_min + offset) / (max(L, S, Q) + offset) * H / H_max * ramp

* ``(L_min + offset) / (max(L, S, Q) + offset)``, the latency factor (``latency``): ``L``
  the proxy's latency estimate, ``S`` its silence, ``Q`` its queue wait while queueing,
  ``L_min`` the lowest estimate among the proxies that are not down, ``offset``
  ``latency_offset_ms``;
* ``H / H_max``, the load factor (``capacity``): its headroom over the largest;
* ``ramp``, slow start's fraction (``health``).

A proxy set aside for its silence (``health.set_aside``), a down one and a drained one weigh
0. If every active proxy is down, they all get ``base_weight * slow_start_floor``
("panic mode", as Envoy does): trying a proxy that may have come back beats refusing every
call. Each proxy's weighting also carries its timers (``timers``): the first-reply timeout
of the requests relayed to it and its in-flight limit (``shed_limit`` while shedding).

Worked example (offset 10 ms): proxies A, B with base 1, A at 2 ms, B at 150 ms, no load
reports. ``L_min = 2``; A weighs 1 * 12/12 = 1, B weighs 1 * 12/160 = 0.075; B gets
0.075 / 1.075 = 7 % of new requests instead of 50 %. If instead both answer in 2 ms and A's
agent reports u = 0.3 and B's u = 0.9: H is 0.7 and 0.1, A weighs 1, B weighs 0.1/0.7 =
0.143 and gets 12.5 %.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from counterpoise.core.policy import capacity, health, latency, shed_limit, timers
from counterpoise.core.policy.health import State
from counterpoise.core.policy.observed import Observed
from counterpoise.core.settings import Settings


@dataclasses.dataclass(frozen=True)
class Weighting:
    """A proxy's weight and every input that produced it (published to Redis as is)."""

    weight: float
    state: State
    base_weight: float
    latency_ms: float | None
    latency_factor: float
    ramp: float
    panic: bool = False
    utilisation: float | None = None
    """The reported load that counted, None if no fresh report."""
    load_factor: float = 1.0
    """``H / H_max`` (1 when no proxy reports its load)."""
    fr_timer_ms: int = 0
    """How long a request relayed to it waits for a first reply
    (``timers.first_reply_timeout_ms``)."""
    queueing: bool = False
    """Queueing now (``timers.queueing``): its ``inflight_limit`` holds new requests back."""
    silent: bool = False
    """Set aside for its silence (``silent_after_ms``): weight 0 while another is heard."""
    inflight_limit: int = 0
    """Its in-flight limit for holding requests at the balancer: ``shed_limit.inflight_limit``,
    the hold limit (``timers.inflight_limit``) unless shedding is on."""
    hold_limit: int = 0
    """What it completes in ``hold_queue_ms`` (``timers.inflight_limit``): its part of the
    backlog a full pool holds before it sheds (``admission.sheds``)."""
    standing_queue: bool = False
    """While shedding is on, the pool is past its capacity or its queue wait stands
    (``shed_limit.holds_new``): its ``inflight_limit`` holds new requests back, queueing or
    not."""


def weigh(
    base_weights: Mapping[str, float],
    drained: frozenset[str] | set[str],
    observed: Mapping[str, Observed],
    now_ms: int,
    settings: Settings,
    loads: Mapping[str, float | None] | None = None,
    shared_per_s: Mapping[str, float] | None = None,
    past_capacity: bool = False,
) -> dict[str, Weighting]:
    """Weights of every proxy in ``base_weights`` (the operator's list), by the formula of
    this module's docstring; ``loads`` holds the fresh reported utilisation of the proxies
    that have one (``core.load``); ``shared_per_s`` this node's part of each proxy's
    throughput over every node (``share``), which sets the in-flight limits (a proxy left out
    is this node's alone: its own throughput); ``past_capacity``: the node shed a request
    lately (``shed_limit.PastCapacity``)."""
    loads = loads or {}
    shared_per_s = shared_per_s or {}
    active = [uri for uri in base_weights if uri not in drained]
    usable = {uri for uri in active if observed[uri].health.state != State.DOWN}
    panic = bool(active) and not usable
    estimates = [
        o.latency.estimate_ms
        for uri, o in observed.items()
        if uri in base_weights and o.health.state != State.DOWN
    ]
    known = [estimate for estimate in estimates if estimate is not None]
    reference = min(known) if known else None
    load_factors = capacity.load_factors(
        {uri: loads.get(uri) for uri in active if uri in usable}, settings.load
    )
    saturated = {uri for uri in usable if observed[uri].saturated(now_ms, settings)}
    silent = {
        uri for uri in usable if health.silent(observed[uri].silence_ms(now_ms), settings.health)
    }
    set_aside = health.set_aside(usable, silent)

    result: dict[str, Weighting] = {}
    for uri, base in base_weights.items():
        o = observed[uri]
        others = len(usable) - (uri in usable)
        rest_saturated = others > 0 and len(saturated) - (uri in saturated) == others
        queue_wait_ms = o.queue_wait_ms(now_ms, settings)
        estimate = o.latency.estimate_ms
        latency_factor = 1.0
        if reference is not None and estimate is not None and o.health.state != State.DOWN:
            expected_ms = max(estimate, o.silence_ms(now_ms), queue_wait_ms)
            latency_factor = latency.latency_factor(expected_ms, reference, settings.latency)
        ramp = health.ramp(o.health, now_ms, settings.health, rest_saturated)
        if uri in drained:
            weight, state = 0.0, State.DRAINED
        elif o.health.state == State.DOWN:
            weight = base * settings.health.slow_start_floor if panic else 0.0
            state = State.DOWN
        elif uri in set_aside:
            weight, state = 0.0, o.health.state
        else:
            weight = base * latency_factor * load_factors.get(uri, 1.0) * ramp
            state = o.health.state
        queueing = o.queueing(now_ms, settings)
        first_reply_ms = max(estimate or 0.0, queue_wait_ms)
        throughput_per_s = shared_per_s.get(uri, o.throughput.per_s)
        hold_limit = timers.inflight_limit(throughput_per_s, settings.timers)
        result[uri] = Weighting(
            weight=weight,
            state=state,
            base_weight=base,
            latency_ms=estimate,
            latency_factor=latency_factor,
            ramp=ramp,
            panic=panic and state == State.DOWN,
            utilisation=loads.get(uri),
            load_factor=load_factors.get(uri, 1.0),
            fr_timer_ms=timers.first_reply_timeout_ms(
                queueing,
                first_reply_ms,
                o.saturated(now_ms, settings),
                settings.failover.fr_timer_ms,
                settings.timers,
            ),
            queueing=queueing,
            silent=uri in set_aside,
            inflight_limit=shed_limit.inflight_limit(
                throughput_per_s, o.service, hold_limit, settings.timers
            ),
            hold_limit=hold_limit,
            standing_queue=shed_limit.holds_new(o.service, past_capacity, settings.timers),
        )
    return result
