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


PROC_NET_UDP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout ...
  531: 0100007F:13C4 00000000:0000 07 00000000:00024000 00:00000000 00000000     0        0 1 2 0 0
  532: 0200007F:13C4 00000000:0000 07 00000000:00000300 00:00000000 00000000     0        0 1 2 0 0
  700: 00000000:0035 00000000:0000 07 00000000:00010000 00:00000000 00000000     0        0 1 2 0 0
"""
"""Two sockets on port 5060 (0x13C4) holding 0x24000 and 0x300 bytes, one on 53 (0x35)."""
NODE = Settings.of(shed_node_backlog_kb=128).timers


def test_the_backlog_is_what_our_ports_sockets_hold_unread():
    assert admission.receive_backlog_bytes(PROC_NET_UDP, frozenset({5060})) == 0x24000 + 0x300
    assert admission.receive_backlog_bytes(PROC_NET_UDP, frozenset({5070})) == 0
    assert admission.receive_backlog_bytes("", frozenset({5060})) == 0


def test_a_backlog_two_ticks_in_a_row_sheds_more_each_tick():
    full = 128 * 1024
    assert admission.next_node_shed_percent(0, [full], NODE) == 0  # one tick: a burst
    assert admission.next_node_shed_percent(0, [full, full], NODE) == 10
    assert admission.next_node_shed_percent(95, [full, full], NODE) == 100
    assert admission.next_node_shed_percent(30, [full - 1, full], NODE) == 25


def test_without_a_backlog_the_share_shrinks_to_nothing():
    assert admission.next_node_shed_percent(30, [0, 0], NODE) == 25
    assert admission.next_node_shed_percent(3, [0, 0], NODE) == 0
    off = Settings.of(shed_node_backlog_kb=0).timers
    assert admission.next_node_shed_percent(50, [10**9, 10**9], off) == 0


def test_a_share_of_the_draws_is_shed():
    assert not admission.node_sheds(0, 0.0)
    assert admission.node_sheds(30, 0.29) and not admission.node_sheds(30, 0.3)
    assert admission.node_sheds(100, 0.999)


def test_while_the_limits_are_tighter_the_bound_follows_the_hold_limits():
    # Shedding's limits (8 and 2) gate; what the pool drains comes from the hold limits.
    big, small = Limit(8, queueing=True, hold_inflight=20), Limit(2, queueing=True, hold_inflight=5)
    assert not admission.sheds(4, [big, small], returning=False, settings=TIMERS)
    assert admission.sheds(5, [big, small], returning=False, settings=TIMERS)
