"""The weight policy: from what was observed of each proxy to the weight it routes with.

Pure arithmetic: no Kamailio, no Redis, no clock of its own (``now_ms`` is passed in).

Per proxy the policy keeps a ``Health``: a latency estimate, a failure streak and a state.

* **Latency estimate** ``L`` (ms): an exponentially weighted moving average of the mean
  latency of each window of samples (first-reply time of requests, round trip of probes; a
  failed request or probe counts as ``failure_penalty_ms``). It rises with time constant
  ``latency_rise_tau_ms`` and falls with ``latency_fall_tau_ms``:
  ``L += (x - L) * (1 - exp(-dt / tau))``.
* **State**: ``up``; ``down`` after ``down_after_failures`` failures in a row; back to
  ``slowstart`` after ``up_after_probes`` answered probes in a row; ``up`` again once
  ``slow_start_ms`` has passed. New proxies start in ``slowstart``.

* **Load** ``u`` in [0, 1]: the utilisation the proxy reports of itself (agent report or
  ``X-CP-Load`` header, whichever is higher, each only while fresh: see ``load``). Its
  headroom is ``H = max(1 - u, load_headroom_floor)``.

The weight of an active (not drained) proxy is::

    weight = base_weight * (L_min + offset) / (L + offset) * H / H_max * ramp

where ``L_min`` is the lowest estimate among the proxies that are not down, ``offset`` is
``latency_offset_ms``, ``H_max`` the largest headroom among the proxies that are not down,
and ``ramp`` rises linearly from ``slow_start_floor`` to 1 during slow start. A proxy with no
fresh load report is given the mean headroom of those that have one (as gRPC's weighted round
robin gives a backend without metrics the mean weight), so a pool where no agent runs weighs
by latency alone, and a proxy whose agent died is neither favoured nor punished.

Down and drained proxies weigh 0. If every active proxy is down, they all get
``base_weight * slow_start_floor`` ("panic mode", as Envoy does): trying a proxy that may
have come back beats refusing every call.

Worked example (offset 10 ms): proxies A, B with base 1, A at 2 ms, B at 150 ms, no load
reports. ``L_min = 2``; A weighs 1 * 12/12 = 1, B weighs 1 * 12/160 = 0.075; B gets
0.075 / 1.075 = 7 % of new requests instead of 50 %. If instead both answer in 2 ms and A's
agent reports u = 0.3 and B's u = 0.9: H is 0.7 and 0.1, A weighs 1, B weighs 0.1/0.7 =
0.143 and gets 12.5 %.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping

from counterpoise.core.settings import Settings
from counterpoise.core.tally import Tally


class State(enum.StrEnum):
    """Where a proxy stands in the policy (README "Feedback and weights")."""

    UP = "up"
    SLOW_START = "slowstart"
    DOWN = "down"
    DRAINED = "drained"
    """The operator drained it (``core.pool.Admin.DRAINED``): it weighs 0 for new requests."""


@dataclasses.dataclass(frozen=True)
class Health:
    state: State
    since_ms: int
    """When the proxy entered ``state``."""
    latency_ms: float | None = None
    """The latency estimate ``L``; None until the first sample."""
    last_sample_ms: int | None = None
    consecutive_failures: int = 0
    probe_streak: int = 0
    """Answered probes in a row while down."""
    probe_ms: float | None = None
    """Mean round trip of the latest window's answered probes."""
    last_window: Tally = dataclasses.field(default_factory=Tally)
    """The latest window with samples, kept to show rates and inputs."""


def new_health(now_ms: int) -> Health:
    return Health(state=State.SLOW_START, since_ms=now_ms)


def window_latency_ms(window: Tally, settings: Settings) -> float:
    """Mean latency of a window's samples, failures charged ``failure_penalty_ms``."""
    total = (
        window.first_reply_ms_sum
        + window.probe_ms_sum
        + settings.failure_penalty_ms * window.failures
    )
    return total / window.samples


def observe(health: Health, window: Tally, now_ms: int, settings: Settings) -> Health:
    """Fold one window of samples into a proxy's health, then apply time-driven changes."""
    if window.samples > 0:
        health = _fold_samples(health, window, now_ms, settings)
    if health.state == State.SLOW_START and now_ms - health.since_ms >= settings.slow_start_ms:
        health = dataclasses.replace(health, state=State.UP, since_ms=now_ms)
    return health


def _fold_samples(health: Health, window: Tally, now_ms: int, settings: Settings) -> Health:
    sample = window_latency_ms(window, settings)
    latency = health.latency_ms
    if latency is None or health.last_sample_ms is None:
        latency = sample
    else:
        tau = settings.latency_rise_tau_ms if sample > latency else settings.latency_fall_tau_ms
        dt = max(now_ms - health.last_sample_ms, 0)
        latency += (sample - latency) * (1.0 - math.exp(-dt / tau))

    # One success ends a failure streak; one failure ends a probe streak.
    streak_failures = 0 if window.successes else health.consecutive_failures + window.failures
    probe_streak = 0 if window.failures else health.probe_streak + window.probes_ok

    state, since = health.state, health.since_ms
    if state != State.DOWN and streak_failures >= settings.down_after_failures:
        state, since, probe_streak = State.DOWN, now_ms, 0
    elif state == State.DOWN and probe_streak >= settings.up_after_probes:
        state, since, streak_failures = State.SLOW_START, now_ms, 0

    return Health(
        state=state,
        since_ms=since,
        latency_ms=latency,
        last_sample_ms=now_ms,
        consecutive_failures=streak_failures,
        probe_streak=probe_streak,
        probe_ms=window.probe_ms_sum / window.probes_ok if window.probes_ok else health.probe_ms,
        last_window=window,
    )


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


def ramp_factor(health: Health, now_ms: int, settings: Settings) -> float:
    if health.state != State.SLOW_START:
        return 1.0
    progress = min(max(now_ms - health.since_ms, 0) / settings.slow_start_ms, 1.0)
    return settings.slow_start_floor + (1.0 - settings.slow_start_floor) * progress


def weigh(
    base_weights: Mapping[str, float],
    drained: frozenset[str] | set[str],
    health: Mapping[str, Health],
    now_ms: int,
    settings: Settings,
    loads: Mapping[str, float | None] | None = None,
) -> dict[str, Weighting]:
    """Weights of every proxy in ``base_weights`` (the operator's list); ``loads`` holds the
    fresh reported utilisation of the proxies that have one (``load.counted``)."""
    loads = loads or {}
    live_latencies = [
        h.latency_ms
        for uri, h in health.items()
        if uri in base_weights and h.state != State.DOWN and h.latency_ms is not None
    ]
    reference = min(live_latencies) if live_latencies else None
    active = [uri for uri in base_weights if uri not in drained]
    panic = bool(active) and all(health[uri].state == State.DOWN for uri in active)
    load_factors = _load_factors(
        {uri: loads.get(uri) for uri in active if health[uri].state != State.DOWN}, settings
    )

    result: dict[str, Weighting] = {}
    for uri, base in base_weights.items():
        h = health[uri]
        latency_factor = 1.0
        if reference is not None and h.latency_ms is not None and h.state != State.DOWN:
            offset = settings.latency_offset_ms
            latency_factor = (reference + offset) / (h.latency_ms + offset)
        ramp = ramp_factor(h, now_ms, settings)
        if uri in drained:
            weight, state = 0.0, State.DRAINED
        elif h.state == State.DOWN:
            weight = base * settings.slow_start_floor if panic else 0.0
            state = State.DOWN
        else:
            weight = base * latency_factor * load_factors.get(uri, 1.0) * ramp
            state = h.state
        result[uri] = Weighting(
            weight=weight,
            state=state,
            base_weight=base,
            latency_ms=h.latency_ms,
            latency_factor=latency_factor,
            ramp=ramp,
            panic=panic and state == State.DOWN,
            utilisation=loads.get(uri),
            load_factor=load_factors.get(uri, 1.0),
        )
    return result


def _load_factors(loads: Mapping[str, float | None], settings: Settings) -> dict[str, float]:
    """``H / H_max`` per proxy; proxies without a report get the mean headroom."""
    headroom = {
        uri: max(1.0 - u, settings.load_headroom_floor) for uri, u in loads.items() if u is not None
    }
    if not headroom:
        return {}
    mean = sum(headroom.values()) / len(headroom)
    best = max(headroom.values())
    return {uri: headroom.get(uri, mean) / best for uri in loads}
