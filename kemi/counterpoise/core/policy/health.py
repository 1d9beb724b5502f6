"""The health state machine: whether a proxy may be weighed at all, and how much of its weight
it may have while it returns.

States (``State``):

* ``slowstart`` -> ``up``: a new proxy, or one back from a long outage, ramps from
  ``slow_start_floor`` of its weight to all of it over ``slow_start_ms`` (``ramp``), then is
  ``up``; at once when every other usable proxy is saturated (``timers.saturated``), since
  ramping would only keep them overloaded.
* ``up``/``slowstart`` -> ``down``: after ``down_after_failures`` failures in a row with no
  sign of life between them (a success, a late reply, any reply heard) and none within
  ``fr_timer_ms`` (``timers.answered_lately``). A saturated proxy that still answers
  something is slow, not dead: it stays in, and the latency estimate charges it.
* ``down`` -> back: after ``up_after_probes`` answered probes in a row (late replies count
  like answers: a frozen proxy that resumes answers its backlog at once). Down for less than
  ``slow_start_after_down_ms`` it is ``up`` at once, with the latency estimate it had
  before its failure streak (``returning_latency_ms``): the streak's penalties describe the
  outage, not the proxy. Longer, it may have restarted cold, and goes through slow start.
* **Set aside** (not a state: it stays ``up``): a proxy silent for ``silent_after_ms``
  while new requests went to it weighs 0 as long as another usable proxy is not silent
  (``set_aside``); its first reply of any kind gives its weight back.
* **Ejection cap** (``cap_ejections``): a proxy failing requests while it answers its
  probes is marked down only while the base weight of such proxies already down stays
  within ``max_ejected_fraction`` of the active pool's; one may always be. A proxy that
  also misses probes is dead, and never capped. A refused ejection is counted once per
  streak; the proxy stays in, weighted by its latency.

Pure: times are passed in.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping

from counterpoise.core.settings import HealthSettings
from counterpoise.core.tally import Tally


class State(enum.StrEnum):
    """Where a proxy stands."""

    UP = "up"
    SLOW_START = "slowstart"
    DOWN = "down"
    DRAINED = "drained"
    """The operator drained it (``core.pool.Admin.DRAINED``): it weighs 0 for new requests.
    Never a state of ``Health``: the operator's list says it, not the proxy's replies."""


@dataclasses.dataclass(frozen=True)
class Health:
    state: State
    since_ms: int
    """When the proxy entered ``state``."""
    consecutive_failures: int = 0
    """Failures in the current streak (requests or probes, no sign of life between)."""
    streak_probe_failures: int = 0
    """Missed probes in the current streak: a proxy that misses probes too is dead, and its
    ejection is not capped."""
    probe_streak: int = 0
    """Answered probes (and late replies) in a row while down."""
    last_failure_ms: int | None = None
    """When a window last had a failure (``timers.saturated``)."""
    latency_before_streak_ms: float | None = None
    """The latency estimate when the current failure streak began: what the proxy returns
    with after a brief outage."""
    down_by_probes: bool = False
    """Down with missed probes (dead), as opposed to down for failed requests alone."""
    ejection_refused: bool = False
    """The current streak's ejection was refused by the cap (counted once per streak)."""


def new_health(now_ms: int) -> Health:
    """A proxy just added to the pool: it starts in slow start."""
    return Health(state=State.SLOW_START, since_ms=now_ms)


def has_news(window: Tally, heard: bool) -> bool:
    """Anything to fold in: samples, late replies, or a reply heard by the workers."""
    return window.samples > 0 or window.late_replies > 0 or heard


def showed_life(window: Tally, heard: bool) -> bool:
    """A success, a late reply or an answered probe in the window, or any reply that is not a
    failure heard by the workers (``heard``)."""
    return window.signs_of_life > 0 or heard


def observe(
    health: Health,
    window: Tally,
    heard: bool,
    answered_lately: bool,
    latency_ms: float | None,
    now_ms: int,
    settings: HealthSettings,
) -> Health:
    """Fold one window into the state, then apply time-driven changes. ``heard``: a reply
    that is not a failure came since the previous window; ``answered_lately``: a sign of
    life within ``fr_timer_ms``, this window's included (``timers.answered_lately``);
    ``latency_ms``: the latency estimate before this window (remembered when a failure
    streak begins)."""
    if has_news(window, heard):
        health = _fold(health, window, heard, answered_lately, latency_ms, now_ms, settings)
    if health.state == State.SLOW_START and now_ms - health.since_ms >= settings.slow_start_ms:
        health = dataclasses.replace(health, state=State.UP, since_ms=now_ms)
    return health


def _fold(
    health: Health,
    window: Tally,
    heard: bool,
    answered_lately: bool,
    latency_ms: float | None,
    now_ms: int,
    settings: HealthSettings,
) -> Health:
    # A sign of life ends a failure streak: a saturated proxy still answers. One failure
    # ends a probe streak.
    alive = showed_life(window, heard)
    failures = 0 if alive else health.consecutive_failures + window.failures
    probe_failures = 0 if alive else health.streak_probe_failures + window.probes_failed
    before_streak = health.latency_before_streak_ms
    if health.consecutive_failures == 0 and health.state != State.DOWN:
        before_streak = latency_ms
    probe_streak = 0 if window.failures else health.probe_streak + window.signs_of_life + heard

    state, since, down_by_probes = health.state, health.since_ms, health.down_by_probes
    if state != State.DOWN and failures >= settings.down_after_failures and not answered_lately:
        state, since, probe_streak = State.DOWN, now_ms, 0
        down_by_probes = probe_failures > 0
    elif state == State.DOWN and probe_streak >= settings.up_after_probes:
        brief = now_ms - since < settings.slow_start_after_down_ms
        state = State.UP if brief else State.SLOW_START
        since, failures, probe_failures, down_by_probes = now_ms, 0, 0, False

    return Health(
        state=state,
        since_ms=since,
        consecutive_failures=failures,
        streak_probe_failures=probe_failures,
        probe_streak=probe_streak,
        last_failure_ms=now_ms if window.failures else health.last_failure_ms,
        latency_before_streak_ms=before_streak if failures or state == State.DOWN else None,
        down_by_probes=down_by_probes,
        ejection_refused=health.ejection_refused and failures > 0,
    )


def returning_latency_ms(before: Health, after: Health) -> float | None:
    """The latency estimate a proxy back from a brief outage resumes with (its estimate before
    the failure streak); None when it did not just come back so."""
    if before.state == State.DOWN and after.state == State.UP:
        return before.latency_before_streak_ms
    return None


def probe_timeout_counts(sent_ms: int, latest_answered_sent_ms: int) -> bool:
    """A probe left unanswered is a failure, unless a probe sent after it was answered: a
    restarted proxy answers its new probes while those sent to it before the restart time out
    ``fr_timer_ms`` later, and each of them would otherwise end the run of answers that
    brings it back (with probes every 200 ms while down, seven of them)."""
    return sent_ms >= latest_answered_sent_ms


def cap_ejections(
    before: Mapping[str, Health],
    after: Mapping[str, Health],
    active: Mapping[str, float],
    settings: HealthSettings,
) -> tuple[dict[str, Health], int]:
    """``after`` with the ejections beyond ``max_ejected_fraction`` undone, and how many
    streaks were refused for the first time. ``active``: the base weights of the proxies not
    drained; a proxy down with missed probes (dead) is not capped, nor is the first one."""
    room = settings.max_ejected_fraction * sum(active.values())
    capped = sum(
        base
        for uri, base in active.items()
        if before[uri].state == State.DOWN and not before[uri].down_by_probes
    )
    result: dict[str, Health] = {}
    refused = 0
    for uri, new in after.items():
        old = before[uri]
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
    return result, refused


def silent(silence_ms: int, settings: HealthSettings) -> bool:
    """Silent for ``silent_after_ms`` or more while asked (``latency.Silence``): frozen or
    dead, not saturated. Never when ``silent_after_ms`` is 0 (off)."""
    return settings.silent_after_ms > 0 and silence_ms >= settings.silent_after_ms


def set_aside(usable: set[str], silent_ones: set[str]) -> set[str]:
    """The proxies that weigh 0 for their silence: the silent ones, while one usable proxy is
    not silent (when all are, the least bad choice is still one of them)."""
    return silent_ones if usable - silent_ones else set()


def ramp(
    health: Health, now_ms: int, settings: HealthSettings, rest_saturated: bool = False
) -> float:
    """Slow start's fraction of the weight, rising linearly from ``slow_start_floor`` to 1;
    1 when not in slow start, or when ``rest_saturated`` (every other usable proxy is
    saturated: a returning proxy is needed at once)."""
    if health.state != State.SLOW_START or rest_saturated:
        return 1.0
    progress = min(max(now_ms - health.since_ms, 0) / settings.slow_start_ms, 1.0)
    return settings.slow_start_floor + (1.0 - settings.slow_start_floor) * progress
