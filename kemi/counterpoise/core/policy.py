"""The weight policy: from what was observed of each proxy to the weight it routes with.

Pure arithmetic: no Kamailio, no Redis, no clock of its own (``now_ms`` is passed in).

Per proxy the policy keeps a ``Health``: a latency estimate, a failure streak and a state.

* **Latency estimate** ``L`` (ms): an exponentially weighted moving average of the mean
  latency of each window of samples (first-reply time of requests, round trip of probes; a
  failed request or probe counts as ``failure_penalty_ms``). It rises with time constant
  ``latency_rise_tau_ms`` and falls with ``latency_fall_tau_ms``:
  ``L += (x - L) * (1 - exp(-dt / tau))``.
* **State**: ``up``; ``down`` after ``down_after_failures`` failures in a row with no sign
  of life between them (a success, or a late reply to a request that had timed out) and
  none for ``fr_timer_ms`` (as long as a request is given to answer): a saturated proxy
  that still answers something is slow, not dead, and stays in with its latency charged;
  back after ``up_after_probes`` answered probes in a row: ``up`` at once with its
  pre-outage latency estimate when it was down less than ``slow_start_after_down_ms``, else
  ``slowstart``, ``up`` again once ``slow_start_ms`` has passed. New proxies start in
  ``slowstart``.
* **Silence** counts as latency: a proxy sent new requests since its last sign of life,
  and silent for ``S`` ms since, weighs as if its estimate were at least ``S``; from
  ``silent_after_ms`` on it weighs 0 while another usable proxy is not silent, so a frozen
  proxy loses its share within a few hundred ms, before its first request times out, even
  when the rest of the pool queues for longer than it has been silent. It stays ``up``: its
  first reply of any kind gives it its weight back.
* **Queue wait** counts as latency too, while a proxy is queueing: in flight divided by
  completed per second (Little's law), the queue as it stands rather than as the requests
  that left it saw it, so two saturated proxies of unequal capacity get unequal weights.
* **Ejection cap** (``observe_pool``): a proxy whose failure streak has no missed probe (it
  fails requests but answers probes) is marked down only while the base weight of such
  proxies already down stays within ``max_ejected_fraction`` of the active pool's; one may
  always be. A refused ejection is counted; the proxy stays in, weighted by its latency.

* **Load** ``u`` in [0, 1]: the utilisation the proxy reports of itself (agent report or
  ``X-CP-Load`` header, whichever is higher, each only while fresh: see ``load``). Its
  headroom is ``H = max(1 - u, load_headroom_floor)``.

The weight of an active (not drained) proxy is::

    weight = base_weight * (L_min + offset) / (L + offset) * H / H_max * ramp

where ``L_min`` is the lowest estimate among the proxies that are not down, ``offset`` is
``latency_offset_ms``, ``H_max`` the largest headroom among the proxies that are not down,
and ``ramp`` rises linearly from ``slow_start_floor`` to 1 during slow start (1 at once when
every other usable proxy is saturated: failed a request within ``saturated_memory_ms``, so
ramping would only keep them overloaded). A proxy with no
fresh load report is given the mean headroom of those that have one (as gRPC's weighted round
robin gives a backend without metrics the mean weight), so a pool where no agent runs weighs
by latency alone, and a proxy whose agent died is neither favoured nor punished.

Each proxy also gets the first-reply timeout its requests are relayed with
(``first_reply_timeout_ms``): longer for a saturated proxy that still answers, whose queue,
not death, delays it.

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

from counterpoise.core import hold
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
    streak_probe_failures: int = 0
    """Missed probes in the current failure streak: a proxy that misses probes too is dead,
    and its ejection is not capped."""
    latency_before_streak_ms: float | None = None
    """``L`` when the current failure streak began: what the proxy returns with after a
    brief outage (the streak's failure penalties describe the outage, not the proxy)."""
    last_failure_ms: int | None = None
    """When a window last had a failure (``saturated``)."""
    last_life_ms: int | None = None
    """When the proxy last showed a sign of life (a success, or a late reply)."""
    inflight: int = 0
    """Requests in flight to it from this node, at the latest window."""
    inflight_at_life: int = 0
    """``inflight`` when it last showed a sign of life: more in flight at a later window, and
    nothing heard, sets ``asked_since_life``."""
    asked_since_life: bool = False
    """New requests went to it since its last sign of life (``inflight`` rose above
    ``inflight_at_life`` at some window): its silence lasts until it answers, even once
    those requests time out and it has fewer in flight again."""

    throughput_per_s: float = 0.0
    """Requests it completed per second (answered, in time or late), a moving average over
    ``load_smoothing_tau_ms``: a saturated proxy's capacity."""
    observed_ms: int | None = None
    """When ``observe`` last ran for it."""

    def queue_wait_ms(self, now_ms: int, settings: Settings) -> float:
        """What a request sent to it now would wait, by Little's law (in flight / completed
        per second), while it is queueing: the latency estimate measures requests that
        entered its queue earlier, this measures the queue as it stands, and a proxy
        completing half as many requests with as many in flight waits twice as long. 0 when
        it is not queueing (then in-flight requests may be ringing calls, not a queue)."""
        if not queueing(self, now_ms, settings):
            return 0.0
        return 1000 * self.inflight / max(self.throughput_per_s, 1.0)

    def silence_ms(self, now_ms: int) -> int:
        """How long it has said nothing while new requests were sent to it: a live proxy
        answers a new request at once (100 Trying), so this is a stall or a death showing
        before any request times out. 0 when nothing new went to it (a proxy whose calls all
        ring says nothing for long, and that is no silence)."""
        if self.last_life_ms is None or not self.asked_since_life:
            return 0
        return now_ms - self.last_life_ms

    def silent(self, now_ms: int, settings: Settings) -> bool:
        """Silent for ``silent_after_ms`` or more: frozen or dead, not saturated."""
        return (
            settings.health.silent_after_ms > 0
            and self.silence_ms(now_ms) >= settings.health.silent_after_ms
        )

    down_by_probes: bool = False
    """Down with missed probes (dead), as opposed to down for failed requests alone."""
    ejection_refused: bool = False
    """The current streak's ejection was refused by the cap (counted once per streak)."""

    def saturated(self, now_ms: int, settings: Settings) -> bool:
        """Failing requests lately while not down: overloaded, or about to be found dead."""
        return (
            self.state != State.DOWN
            and self.last_failure_ms is not None
            and now_ms - self.last_failure_ms < settings.timers.saturated_memory_ms
        )


def new_health(now_ms: int) -> Health:
    return Health(state=State.SLOW_START, since_ms=now_ms)


def window_latency_ms(window: Tally, settings: Settings) -> float:
    """Mean latency of a window's samples, failures charged ``failure_penalty_ms`` (timeouts
    what they waited, when that is more)."""
    total = (
        window.first_reply_ms_sum
        + window.probe_ms_sum
        + settings.latency.failure_penalty_ms * window.failures
        + window.timeout_excess_ms_sum
    )
    return total / window.samples


def observe(
    health: Health,
    window: Tally,
    now_ms: int,
    settings: Settings,
    heard: bool = False,
    inflight: int | None = None,
) -> Health:
    """Fold one window of samples into a proxy's health, then apply time-driven changes.
    ``heard``: the proxy sent a reply that is not a failure (any 1xx, a late reply to a
    request already given up on, a probe's answer) since the previous window, as the
    workers' core reply route saw it: a sign of life even when no request completed."""
    health = _count_throughput(health, window, now_ms, settings, heard)
    if inflight is not None:
        health = dataclasses.replace(health, inflight=inflight)
    if window.samples > 0 or window.late_replies > 0 or heard:
        health = _fold_samples(health, window, now_ms, settings, heard)
    if health.inflight > health.inflight_at_life and not health.asked_since_life:
        health = dataclasses.replace(health, asked_since_life=True)
    if (
        health.state == State.SLOW_START
        and now_ms - health.since_ms >= settings.health.slow_start_ms
    ):
        health = dataclasses.replace(health, state=State.UP, since_ms=now_ms)
    return health


def showed_life(window: Tally, heard: bool) -> bool:
    """A success, a late reply or an answered probe in the window, or any reply that is not a
    failure heard by the workers (``heard``)."""
    return window.signs_of_life > 0 or heard


def _count_throughput(
    health: Health, window: Tally, now_ms: int, settings: Settings, heard: bool
) -> Health:
    """Only windows with a sign of life count: a frozen or dead proxy completes nothing
    because it is not there, which says nothing of its capacity, and an estimate decayed
    to 0 meanwhile made a proxy back from a 5 s death look like a 3 s queue (its in-flight
    count over a throughput of 1/s) and kept it at a tenth of its share for 2 s while the
    rest of the pool was drowning."""
    completed = window.requests_ok + window.late_replies
    alive = showed_life(window, heard)
    if health.observed_ms is None or now_ms <= health.observed_ms or not alive:
        return dataclasses.replace(health, observed_ms=now_ms)
    dt = now_ms - health.observed_ms
    rate = completed * 1000 / dt
    alpha = 1.0 - math.exp(-dt / settings.load.load_smoothing_tau_ms)
    throughput = health.throughput_per_s + (rate - health.throughput_per_s) * alpha
    return dataclasses.replace(health, observed_ms=now_ms, throughput_per_s=throughput)


def _fold_latency(health: Health, window: Tally, now_ms: int, settings: Settings) -> float:
    sample = window_latency_ms(window, settings)
    latency = health.latency_ms
    if latency is None or health.last_sample_ms is None:
        return sample
    tau = (
        settings.latency.latency_rise_tau_ms
        if sample > latency
        else settings.latency.latency_fall_tau_ms
    )
    dt = max(now_ms - health.last_sample_ms, 0)
    return latency + (sample - latency) * (1.0 - math.exp(-dt / tau))


def _fold_samples(
    health: Health, window: Tally, now_ms: int, settings: Settings, heard: bool
) -> Health:
    latency, last_sample = health.latency_ms, health.last_sample_ms
    if window.samples > 0:  # late replies alone say the proxy is alive, not how fast
        latency, last_sample = _fold_latency(health, window, now_ms, settings), now_ms

    # A sign of life (a success, a late reply) ends a failure streak: a saturated proxy
    # still answers. One failure ends a probe streak.
    alive = showed_life(window, heard)
    streak_failures = 0 if alive else health.consecutive_failures + window.failures
    streak_probes = 0 if alive else health.streak_probe_failures + window.probes_failed
    before_streak = health.latency_before_streak_ms
    if health.consecutive_failures == 0 and health.state != State.DOWN:
        before_streak = health.latency_ms
    # While down, late replies count like answered probes: a frozen proxy that resumes
    # answers its backlog at once, and is back before the next probe.
    probe_streak = 0 if window.failures else health.probe_streak + window.signs_of_life + heard

    state, since, down_by_probes = health.state, health.since_ms, health.down_by_probes
    last_life = now_ms if alive else health.last_life_ms
    silent = last_life is None or now_ms - last_life >= settings.failover.fr_timer_ms
    if state != State.DOWN and streak_failures >= settings.health.down_after_failures and silent:
        state, since, probe_streak = State.DOWN, now_ms, 0
        down_by_probes = streak_probes > 0
    elif state == State.DOWN and probe_streak >= settings.health.up_after_probes:
        brief = now_ms - since < settings.health.slow_start_after_down_ms
        state, since, streak_failures, streak_probes = State.SLOW_START, now_ms, 0, 0
        if brief:
            state = State.UP
            latency = before_streak if before_streak is not None else latency
        down_by_probes = False

    return Health(
        state=state,
        since_ms=since,
        latency_ms=latency,
        last_sample_ms=last_sample,
        consecutive_failures=streak_failures,
        probe_streak=probe_streak,
        probe_ms=window.probe_ms_sum / window.probes_ok if window.probes_ok else health.probe_ms,
        last_window=window,
        streak_probe_failures=streak_probes,
        latency_before_streak_ms=before_streak if streak_failures or state == State.DOWN else None,
        last_failure_ms=now_ms if window.failures else health.last_failure_ms,
        last_life_ms=last_life,
        inflight=health.inflight,
        inflight_at_life=health.inflight if alive else health.inflight_at_life,
        asked_since_life=health.asked_since_life and not alive,
        throughput_per_s=health.throughput_per_s,
        observed_ms=health.observed_ms,
        down_by_probes=down_by_probes,
        ejection_refused=health.ejection_refused and streak_failures > 0,
    )


@dataclasses.dataclass(frozen=True)
class PoolHealth:
    health: dict[str, Health]
    ejections_refused: int
    """Proxies kept in this time by the ejection cap (``max_ejected_fraction``)."""


def observe_pool(
    health: Mapping[str, Health],
    windows: Mapping[str, Tally],
    active: Mapping[str, float],
    now_ms: int,
    settings: Settings,
    heard: frozenset[str] | set[str] = frozenset(),
    inflight: Mapping[str, int] | None = None,
) -> PoolHealth:
    """``observe`` every proxy of ``health``, with the ejection cap: ``active`` holds the base
    weights of the proxies not drained. A proxy marked down for failed requests while it
    answers its probes counts against ``max_ejected_fraction`` of the active base weight;
    one that also missed its probes (dead) does not, and neither does the first ejection.
    ``heard``: the proxies that sent a reply that is not a failure since the last call;
    ``inflight``: the requests in flight to each proxy now."""
    room = settings.health.max_ejected_fraction * sum(active.values())
    capped = sum(
        base
        for uri, base in active.items()
        if health[uri].state == State.DOWN and not health[uri].down_by_probes
    )
    result: dict[str, Health] = {}
    refused = 0
    for uri, old in health.items():
        sent = inflight.get(uri) if inflight is not None else None
        new = observe(old, windows.get(uri, Tally()), now_ms, settings, uri in heard, sent)
        ejected = old.state != State.DOWN and new.state == State.DOWN
        if ejected and not new.down_by_probes and uri in active:
            if capped > 0 and capped + active[uri] > room:
                refused += 0 if old.ejection_refused else 1
                new = dataclasses.replace(
                    new, state=old.state, since_ms=old.since_ms, ejection_refused=True
                )
            else:
                capped += active[uri]
        result[uri] = new
    return PoolHealth(result, refused)


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
    """How long a request relayed to it waits for a first reply (``first_reply_timeout_ms``)."""
    queueing: bool = False
    """Queueing now (``queueing``): its ``inflight_limit`` holds new requests back."""
    silent: bool = False
    """Set aside for its silence (``silent_after_ms``): weight 0 while another is heard."""
    inflight_limit: int = 0
    """Its in-flight limit for holding requests at the balancer (``hold.inflight_limit``)."""


def probe_timeout_counts(sent_ms: int, latest_answered_sent_ms: int) -> bool:
    """A probe left unanswered is a failure, unless a probe sent after it was answered: a
    restarted proxy answers its new probes while those sent to it before the restart time out
    ``fr_timer_ms`` later, and each of them would otherwise end the run of answers that
    brings it back (with probes every 200 ms while down, seven of them)."""
    return sent_ms >= latest_answered_sent_ms


def queueing(health: Health, now_ms: int, settings: Settings) -> bool:
    """Answering, but slowly: it answered something within ``fr_timer_ms``, and it timed out
    requests lately (``saturated``) or its latency estimate is past half the failure penalty
    (a queue builds up before the first timeout)."""
    heard = (
        health.last_life_ms is not None
        and now_ms - health.last_life_ms < settings.failover.fr_timer_ms
    )
    slow = (
        health.latency_ms is not None
        and health.latency_ms >= settings.latency.failure_penalty_ms / 2
    )
    return heard and (slow or health.saturated(now_ms, settings))


LONG_WAIT_FRACTION = 1 / 3
"""A queueing proxy whose expected first reply (its latency estimate or its queue wait, the
longer) is past this fraction of ``fr_timer_ms`` gets ``saturated_fr_timer_ms``: a third,
500 ms of the default 1.5 s, as a retransmission timer waits a few round trips before it
gives up (TCP's RTO is the mean plus four deviations)."""


def first_reply_timeout_ms(health: Health, now_ms: int, settings: Settings) -> int:
    """``saturated_fr_timer_ms`` for a queueing proxy that timed out requests lately or whose
    expected first reply is past ``LONG_WAIT_FRACTION`` of ``fr_timer_ms``: its queue, not
    death, may delay it past ``fr_timer_ms``, and waiting beats retrying on a proxy as busy
    while the first one still does the work. Else ``fr_timer_ms``: a proxy that answers in a
    third of that (a one-worker proxy at 70 % load answers in 200-400 ms, and counts as
    queueing) and then stays silent for all of it is dead or frozen more likely than queued,
    so its calls fail over after 1.5 s, not 6 (the small proxy's kill: the calls relayed to
    it in the half second before its silence set it aside took 6.1 s)."""
    if not queueing(health, now_ms, settings):
        return settings.failover.fr_timer_ms
    expected_ms = max(health.latency_ms or 0.0, health.queue_wait_ms(now_ms, settings))
    long_wait = expected_ms >= settings.failover.fr_timer_ms * LONG_WAIT_FRACTION
    if long_wait or health.saturated(now_ms, settings):
        return settings.timers.saturated_fr_timer_ms
    return settings.failover.fr_timer_ms


def ramp_factor(
    health: Health, now_ms: int, settings: Settings, rest_saturated: bool = False
) -> float:
    """Slow start's fraction of the weight; 1 when ``rest_saturated`` (every other usable
    proxy is saturated: a returning proxy is needed at once)."""
    if health.state != State.SLOW_START or rest_saturated:
        return 1.0
    progress = min(max(now_ms - health.since_ms, 0) / settings.health.slow_start_ms, 1.0)
    return settings.health.slow_start_floor + (1.0 - settings.health.slow_start_floor) * progress


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

    usable = {uri for uri in active if health[uri].state != State.DOWN}
    saturated = {uri for uri in usable if health[uri].saturated(now_ms, settings)}
    silent = {uri for uri in usable if health[uri].silent(now_ms, settings)}
    set_aside = silent if usable - silent else set()

    result: dict[str, Weighting] = {}
    for uri, base in base_weights.items():
        h = health[uri]
        others = len(usable) - (uri in usable)
        rest_saturated = others > 0 and len(saturated) - (uri in saturated) == others
        latency_factor = 1.0
        if reference is not None and h.latency_ms is not None and h.state != State.DOWN:
            offset = settings.latency.latency_offset_ms
            latency = max(h.latency_ms, h.silence_ms(now_ms), h.queue_wait_ms(now_ms, settings))
            latency_factor = (reference + offset) / (latency + offset)
        ramp = ramp_factor(h, now_ms, settings, rest_saturated)
        if uri in drained:
            weight, state = 0.0, State.DRAINED
        elif h.state == State.DOWN:
            weight = base * settings.health.slow_start_floor if panic else 0.0
            state = State.DOWN
        elif uri in set_aside:
            weight, state = 0.0, h.state
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
            fr_timer_ms=first_reply_timeout_ms(h, now_ms, settings),
            queueing=queueing(h, now_ms, settings),
            silent=uri in set_aside,
            inflight_limit=hold.inflight_limit(h.throughput_per_s, settings.timers.hold_queue_ms),
        )
    return result


def _load_factors(loads: Mapping[str, float | None], settings: Settings) -> dict[str, float]:
    """``H / H_max`` per proxy; proxies without a report get the mean headroom."""
    headroom = {
        uri: max(1.0 - u, settings.load.load_headroom_floor)
        for uri, u in loads.items()
        if u is not None
    }
    if not headroom:
        return {}
    mean = sum(headroom.values()) / len(headroom)
    best = max(headroom.values())
    return {uri: headroom.get(uri, mean) / best for uri in loads}
