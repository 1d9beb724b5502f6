"""Admission (``core.admission``): when a full pool sheds a new request instead of holding it."""

from __future__ import annotations

from counterpoise.core import admission
from counterpoise.core.hold import Limit
from counterpoise.core.policy.health import State
from counterpoise.core.settings import Settings

TIMERS = Settings.of(hold_queue_ms=500, shed_hold_ms=100, shed_outage_grace_ms=10_000).timers
BIG, SMALL = Limit(20, queueing=True), Limit(5, queueing=True)
"""40 and 10 completed requests a second, at 500 ms of queue: the pool drains 25 requests
in 500 ms, 5 in 100 ms."""


def test_a_backlog_shorter_than_shed_hold_ms_is_held():
    assert not admission.sheds(4, [BIG, SMALL], returning=False, settings=TIMERS)


def test_a_backlog_of_shed_hold_ms_sheds_the_next_request():
    assert admission.sheds(5, [BIG, SMALL], returning=False, settings=TIMERS)
    assert admission.sheds(50, [BIG, SMALL], returning=False, settings=TIMERS)


def test_the_bound_follows_the_limits_so_a_bigger_pool_holds_more():
    assert not admission.sheds(5, [BIG, BIG, SMALL], returning=False, settings=TIMERS)
    assert admission.sheds(9, [BIG, BIG, SMALL], returning=False, settings=TIMERS)


def test_the_first_request_finding_no_room_is_held():
    assert not admission.sheds(0, [Limit(2, queueing=True)], returning=False, settings=TIMERS)


def test_nothing_is_shed_while_a_proxy_out_of_the_weighting_may_come_back():
    assert not admission.sheds(500, [BIG, SMALL], returning=True, settings=TIMERS)


def test_shed_hold_ms_0_or_holding_off_never_sheds():
    off = Settings.of(shed_hold_ms=0).timers
    assert not admission.sheds(500, [BIG, SMALL], returning=False, settings=off)
    no_hold = Settings.of(hold_queue_ms=0).timers
    assert not admission.sheds(500, [BIG, SMALL], returning=False, settings=no_hold)


def test_a_proxy_silent_or_down_for_a_moment_may_return():
    assert admission.may_return(0.0, State.UP, 95_000, 100_000, TIMERS)  # set aside, silent
    assert admission.may_return(0.0, State.DOWN, 91_000, 100_000, TIMERS)


def test_a_proxy_gone_longer_than_the_grace_a_drained_or_weighted_one_does_not():
    assert not admission.may_return(0.0, State.DOWN, 90_000, 100_000, TIMERS)
    assert not admission.may_return(0.0, State.DOWN, None, 100_000, TIMERS)  # never heard
    assert not admission.may_return(0.0, State.DRAINED, 99_000, 100_000, TIMERS)
    assert not admission.may_return(0.4, State.UP, 99_000, 100_000, TIMERS)
