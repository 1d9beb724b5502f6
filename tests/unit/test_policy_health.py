"""The health state machine alone: up, slow start, down and back, set aside, the ejection cap
and probes, with only the settings it reads and the other parts' outputs passed in."""

from __future__ import annotations

import dataclasses

import pytest

from counterpoise.core.policy.health import (
    Health,
    State,
    cap_ejections,
    new_health,
    observe,
    probe_timeout_counts,
    ramp,
    returning_latency_ms,
    set_aside,
    silent,
)
from counterpoise.core.settings import HealthSettings
from counterpoise.core.tally import Tally

R = HealthSettings(
    down_after_failures=3,
    up_after_probes=2,
    slow_start_ms=8000,
    slow_start_floor=0.1,
    slow_start_after_down_ms=30_000,
    silent_after_ms=300,
    max_ejected_fraction=0.5,
)
"""The settings this part reads, pinned here rather than taken from the defaults."""
FAILED = Tally(requests_failed=1)
ANSWERED = Tally(requests_ok=1, first_reply_ms_sum=5)
PROBE_OK = Tally(probes_ok=1, probe_ms_sum=1)
PROBE_MISSED = Tally(probes_failed=1)


def up() -> Health:
    return Health(State.UP, 0)


def fail(health: Health, now_ms: int, window: Tally = FAILED, latency_ms: float = 5.0) -> Health:
    return observe(health, window, False, False, latency_ms, now_ms, R)


def down(now_ms: int = 10_000, window: Tally = FAILED) -> Health:
    health = up()
    for at in (now_ms - 200, now_ms - 100, now_ms):
        health = fail(health, at, window, latency_ms=5.0 if at < now_ms - 100 else 300.0)
    assert (health.state, health.since_ms) == (State.DOWN, now_ms)
    return health


def answer(health: Health, now_ms: int, window: Tally = PROBE_OK) -> Health:
    return observe(health, window, False, True, 500.0, now_ms, R)


def test_a_new_proxy_is_in_slow_start_until_slow_start_ms_has_passed():
    health = new_health(1000)
    assert health == Health(State.SLOW_START, 1000)
    assert observe(health, Tally(), False, False, None, 8999, R).state == State.SLOW_START
    later = observe(health, Tally(), False, False, None, 9000, R)
    assert (later.state, later.since_ms) == (State.UP, 9000)


def test_failures_in_a_row_with_no_answer_lately_mark_it_down():
    health = fail(fail(up(), 9000), 9100)
    assert (health.state, health.consecutive_failures) == (State.UP, 2)
    health = fail(health, 9200, PROBE_MISSED)
    assert (health.state, health.since_ms, health.down_by_probes) == (State.DOWN, 9200, True)


def test_a_proxy_that_answered_lately_is_not_marked_down():
    health = up()
    for now in (9000, 9100, 9200, 9300):
        health = observe(health, FAILED, False, True, 5.0, now, R)
    assert (health.state, health.consecutive_failures) == (State.UP, 4)
    # Its last answer is no longer recent: down at the next failure, for failed requests alone.
    health = observe(health, FAILED, False, False, 5.0, 9500, R)
    assert (health.state, health.down_by_probes) == (State.DOWN, False)


def test_a_sign_of_life_ends_the_streak():
    health = fail(fail(up(), 9000), 9100)
    assert answer(health, 9200).consecutive_failures == 0
    late = observe(health, Tally(late_replies=1), False, True, 5.0, 9200, R)
    assert late.consecutive_failures == 0
    heard = observe(health, Tally(), True, True, 5.0, 9200, R)
    assert heard.consecutive_failures == 0


def test_a_window_with_no_news_changes_nothing_but_time():
    health = fail(up(), 9000)
    assert observe(health, Tally(), False, False, 5.0, 9200, R) == health


def test_a_proxy_down_briefly_returns_up_with_its_estimate_before_the_streak():
    before = down(10_000)
    assert before.latency_before_streak_ms == 5.0
    one = answer(before, 11_000)
    assert (one.state, one.probe_streak) == (State.DOWN, 1)
    back = answer(one, 12_000)
    assert (back.state, back.since_ms, back.consecutive_failures) == (State.UP, 12_000, 0)
    assert returning_latency_ms(one, back) == 5.0
    assert back.latency_before_streak_ms is None


def test_a_proxy_down_long_returns_through_slow_start():
    one = answer(down(10_000), 10_000 + R.slow_start_after_down_ms)
    back = answer(one, 11_000 + R.slow_start_after_down_ms)
    assert back.state == State.SLOW_START
    assert returning_latency_ms(one, back) is None


def test_a_failure_breaks_the_probe_streak_and_late_replies_count_as_answers():
    health = answer(answer(down(10_000), 11_000, PROBE_MISSED), 12_000)
    assert (health.state, health.probe_streak) == (State.DOWN, 1)
    resumed = answer(down(10_000), 11_000, Tally(late_replies=5))
    assert resumed.state == State.UP


def test_the_last_failure_is_remembered():
    health = fail(up(), 9000)
    assert answer(health, 9200).last_failure_ms == 9000
    assert down(9500).last_failure_ms == 9500


def test_the_cap_refuses_an_ejection_beyond_max_ejected_fraction_once_per_streak():
    active = {"a": 1.0, "b": 1.0, "c": 1.0}
    before = {"a": down(), "b": fail(fail(up(), 9800), 9900), "c": up()}
    assert not before["a"].down_by_probes
    after = {**before, "b": fail(before["b"], 10_000)}
    assert after["b"].state == State.DOWN
    kept, refused = cap_ejections(before, after, active, R)
    assert (kept["b"].state, kept["b"].since_ms, kept["b"].ejection_refused) == (State.UP, 0, True)
    assert refused == 1
    again, refused = cap_ejections(kept, {**kept, "b": fail(kept["b"], 10_100)}, active, R)
    assert (again["b"].state, refused) == (State.UP, 0)


def test_the_first_ejection_is_allowed_and_dead_proxies_are_not_capped():
    active = {"a": 3.0, "b": 1.0}
    before = {"a": fail(fail(up(), 9800), 9900), "b": up()}
    first, refused = cap_ejections(before, {**before, "a": fail(before["a"], 10_000)}, active, R)
    assert (first["a"].state, refused) == (State.DOWN, 0)
    dead = down(10_100, PROBE_MISSED)
    second, refused = cap_ejections(first, {**first, "b": dead}, active, R)
    assert (second["b"].state, refused) == (State.DOWN, 0)


def test_a_drained_proxy_is_not_capped_nor_counted():
    before = {"a": down(), "b": fail(fail(up(), 9800), 9900)}
    after = {**before, "b": fail(before["b"], 10_000)}
    # Only b is active: a down and drained takes no room.
    kept, refused = cap_ejections(before, after, {"b": 1.0}, R)
    assert (kept["b"].state, refused) == (State.DOWN, 0)


def test_silent_from_silent_after_ms_unless_off():
    assert not silent(R.silent_after_ms - 1, R)
    assert silent(R.silent_after_ms, R)
    assert not silent(10_000, dataclasses.replace(R, silent_after_ms=0))


def test_silent_proxies_are_set_aside_while_another_is_not():
    assert set_aside({"a", "b"}, {"a"}) == {"a"}
    assert set_aside({"a", "b"}, {"a", "b"}) == set()
    assert set_aside(set(), set()) == set()


def test_the_ramp_rises_from_the_floor_to_one_over_slow_start():
    health = Health(State.SLOW_START, 1000)
    assert ramp(health, 1000, R) == pytest.approx(R.slow_start_floor)
    assert ramp(health, 1000 + R.slow_start_ms // 4, R) == pytest.approx(0.1 + 0.9 * 0.25)
    assert ramp(health, 1000 + R.slow_start_ms, R) == 1.0
    assert ramp(health, 1000, R, rest_saturated=True) == 1.0
    assert ramp(up(), 0, R) == 1.0


def test_a_probe_timeout_counts_unless_a_later_probe_was_answered():
    assert probe_timeout_counts(sent_ms=1000, latest_answered_sent_ms=800)
    assert probe_timeout_counts(sent_ms=1000, latest_answered_sent_ms=1000)
    assert not probe_timeout_counts(sent_ms=1000, latest_answered_sent_ms=1200)
