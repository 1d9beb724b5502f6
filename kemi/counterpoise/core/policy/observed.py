"""What the balancer has observed of one proxy, one part per concern, and how a window of
samples updates each part.

Each part keeps its own state and is folded by its own module: the latency average and the
silence (``latency``), the throughput (``capacity``), the state machine (``health``). This
module only hands each part the inputs it needs, in order: a window's signs of life update
the silence before the state machine asks whether the proxy answered lately, and a proxy
back from a brief outage resumes with the latency estimate the state machine remembered.

Pure: times are passed in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from counterpoise.core.policy import health, timers
from counterpoise.core.policy.capacity import Throughput
from counterpoise.core.policy.health import Health
from counterpoise.core.policy.latency import Average, Silence, queue_wait_ms, slow
from counterpoise.core.policy.service import Service
from counterpoise.core.settings import Settings
from counterpoise.core.tally import Tally


@dataclasses.dataclass(frozen=True)
class Observed:
    health: Health
    latency: Average = dataclasses.field(default_factory=Average)
    silence: Silence = dataclasses.field(default_factory=Silence)
    throughput: Throughput = dataclasses.field(default_factory=Throughput)
    probe_ms: float | None = None
    """Mean round trip of the latest window's answered probes (shown, not weighed)."""
    last_window: Tally = dataclasses.field(default_factory=Tally)
    """The latest window with news, kept to show rates and inputs."""
    service: Service = dataclasses.field(default_factory=Service)
    """Its service time and queue wait (``service``), which size its limit while shedding."""

    def saturated(self, now_ms: int, settings: Settings) -> bool:
        return timers.saturated(self.health, now_ms, settings.timers)

    def silence_ms(self, now_ms: int) -> int:
        return self.silence.silence_ms(now_ms)

    def queueing(self, now_ms: int, settings: Settings) -> bool:
        return timers.queueing(
            timers.answered_lately(
                self.silence.last_life_ms, now_ms, settings.failover.fr_timer_ms
            ),
            slow(self.latency.estimate_ms, settings.latency),
            self.saturated(now_ms, settings),
        )

    def queue_wait_ms(self, now_ms: int, settings: Settings) -> float:
        """The queue wait (``latency.queue_wait_ms``) while queueing, else 0: in-flight
        requests to a proxy that is not queueing may be ringing calls, not a queue."""
        if not self.queueing(now_ms, settings):
            return 0.0
        return queue_wait_ms(self.silence.inflight, self.throughput.per_s)


def new_observed(now_ms: int) -> Observed:
    """A proxy just added to the pool."""
    return Observed(health.new_health(now_ms))


def observe(
    observed: Observed,
    window: Tally,
    now_ms: int,
    settings: Settings,
    heard: bool = False,
    inflight: int | None = None,
) -> Observed:
    """Fold one window of samples into every part. ``heard``: the proxy sent a reply that is
    not a failure (any 1xx, a late reply, a probe's answer) since the previous window, as the
    workers' reply route saw it: a sign of life even when no request completed;
    ``inflight``: the requests in flight to it now (None: unknown)."""
    alive = health.showed_life(window, heard)
    completed = window.requests_ok + window.late_replies
    throughput = observed.throughput.count(completed, alive, now_ms, settings.load)
    silence = observed.silence.observe(alive, now_ms, inflight)
    state = health.observe(
        observed.health,
        window,
        heard,
        timers.answered_lately(silence.last_life_ms, now_ms, settings.failover.fr_timer_ms),
        observed.latency.estimate_ms,
        now_ms,
        settings.health,
    )
    latency = observed.latency.fold(window, now_ms, settings.latency)
    returning_ms = health.returning_latency_ms(observed.health, state)
    if returning_ms is not None:
        latency = dataclasses.replace(latency, estimate_ms=returning_ms)
    probe_ms, last_window = observed.probe_ms, observed.last_window
    if health.has_news(window, heard):
        last_window = window
        if window.probes_ok:
            probe_ms = window.probe_ms_sum / window.probes_ok
    service = observed.service.fold(window, now_ms, settings.load)
    return Observed(state, latency, silence, throughput, probe_ms, last_window, service)


@dataclasses.dataclass(frozen=True)
class PoolObserved:
    observed: dict[str, Observed]
    ejections_refused: int
    """Proxies kept in this time by the ejection cap (``health.cap_ejections``)."""


def observe_pool(
    observed: Mapping[str, Observed],
    windows: Mapping[str, Tally],
    active: Mapping[str, float],
    now_ms: int,
    settings: Settings,
    heard: frozenset[str] | set[str] = frozenset(),
    inflight: Mapping[str, int] | None = None,
) -> PoolObserved:
    """``observe`` every proxy of ``observed``, then the ejection cap: ``active`` holds the
    base weights of the proxies not drained; ``heard``: the proxies that sent a reply that
    is not a failure since the last call; ``inflight``: the requests in flight to each."""
    after = {
        uri: observe(
            old,
            windows.get(uri, Tally()),
            now_ms,
            settings,
            uri in heard,
            inflight.get(uri) if inflight is not None else None,
        )
        for uri, old in observed.items()
    }
    capped, refused = health.cap_ejections(
        {uri: o.health for uri, o in observed.items()},
        {uri: o.health for uri, o in after.items()},
        active,
        settings.health,
    )
    result = {uri: dataclasses.replace(o, health=capped[uri]) for uri, o in after.items()}
    return PoolObserved(result, refused)
