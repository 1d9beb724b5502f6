"""The holding rule (``core.hold``): limits, when a new request is held, whom a release picks."""

from __future__ import annotations

from counterpoise.core import hold
from counterpoise.core.hold import Limit
from counterpoise.core.policy.capacity import Throughput
from counterpoise.core.policy.health import Health, State
from counterpoise.core.policy.latency import Average
from counterpoise.core.policy.observed import Observed
from counterpoise.core.policy.weights import weigh
from counterpoise.core.settings import Settings

A, B = "sip:a", "sip:b"


def counts(**inflight: int):
    return lambda uri: inflight[uri.removeprefix("sip:")]


def test_the_limit_is_the_in_flight_count_of_a_hold_queue_ms_queue():
    assert hold.inflight_limit(20.0, 1000) == 20
    assert hold.inflight_limit(14.2, 500) == 8  # ceil(7.1): a partial request still has room
    assert hold.inflight_limit(0.0, 1000) == hold.HOLD_MIN_INFLIGHT
    assert hold.inflight_limit(40.0, 0) == 0  # holding off: no limit


def test_a_new_request_goes_to_its_draw_while_that_has_room():
    limits = {A: Limit(4, queueing=True), B: Limit(4, queueing=True)}
    assert hold.admit(A, (A, B), limits, counts(a=3, b=0), held=0) == A


def test_a_proxy_that_is_not_queueing_is_never_full_for_a_new_request():
    # Its in-flight requests may be ringing calls, not a queue.
    limits = {A: Limit(4, queueing=False), B: Limit(4, queueing=True)}
    assert hold.admit(A, (A, B), limits, counts(a=40, b=0), held=0) == A


def test_a_new_request_reads_no_count_of_a_proxy_whose_limit_does_not_apply():
    read: list[str] = []

    def counted(uri: str) -> int:
        read.append(uri)
        return 0

    limits = {A: Limit(4, queueing=False), B: Limit(0, queueing=True)}
    assert hold.admit(A, (A, B), limits, counted, held=0) == A
    assert hold.roomiest((A, B), limits, counted, releasing=False) == A
    assert read == []
    assert hold.roomiest((A, B), limits, counted, releasing=True) == B  # no limit: most room
    assert read == [A]  # a release is limited by any proxy's limit; B has none (holding off)


def test_a_full_draw_gives_way_to_the_proxy_with_the_most_room():
    limits = {A: Limit(4, queueing=True), B: Limit(10, queueing=True)}
    assert hold.admit(A, (A, B), limits, counts(a=4, b=6), held=0) == B


def test_a_new_request_is_held_when_every_proxy_is_queueing_at_its_limit():
    limits = {A: Limit(4, queueing=True), B: Limit(2, queueing=True)}
    assert hold.admit(A, (A, B), limits, counts(a=4, b=3), held=0) is None


def test_a_new_request_queues_behind_those_already_held():
    limits = {A: Limit(4, queueing=False), B: Limit(4, queueing=False)}
    assert hold.admit(A, (A, B), limits, counts(a=0, b=0), held=1) is None


def test_with_holding_off_every_proxy_has_room():
    limits = {A: Limit(0, queueing=True)}
    assert hold.admit(A, (A,), limits, counts(a=1000), held=0) == A
    assert hold.roomiest((A,), limits, counts(a=1000), releasing=True) == A


def test_a_release_respects_every_proxys_limit_queueing_or_not():
    # A proxy back from a death is not queueing: it takes the backlog at its limit's pace.
    limits = {A: Limit(4, queueing=False), B: Limit(4, queueing=True)}
    assert hold.roomiest((A, B), limits, counts(a=4, b=4), releasing=True) is None
    assert hold.roomiest((A, B), limits, counts(a=3, b=4), releasing=True) == A
    assert hold.roomiest((A, B), limits, counts(a=3, b=1), releasing=True) == B


def test_a_request_held_hold_max_ms_is_overdue():
    assert not hold.overdue(3999, 4000)
    assert hold.overdue(4000, 4000)


def test_the_policy_gives_each_proxy_the_limit_of_its_throughput():
    settings = Settings.of(hold_queue_ms=500)
    health = {
        A: Observed(Health(State.UP, 0), Average(5.0), throughput=Throughput(30.0)),
        B: Observed(Health(State.UP, 0), Average(5.0), throughput=Throughput(0.5)),
    }
    weights = weigh({A: 1.0, B: 1.0}, set(), health, 1000, settings)
    assert weights[A].inflight_limit == 15
    assert weights[B].inflight_limit == hold.HOLD_MIN_INFLIGHT


def test_while_shedding_a_proxy_not_queueing_holds_new_requests_at_its_hold_limit():
    # Its tighter limit (8) binds released requests, and new ones once it is queueing.
    limits = {A: Limit(8, queueing=False, hold_inflight=20)}
    assert hold.admit(A, (A,), limits, counts(a=19), held=0) == A
    assert hold.admit(A, (A,), limits, counts(a=20), held=0) is None
    assert hold.roomiest((A,), limits, counts(a=8), releasing=True) is None
    queueing = {A: Limit(8, queueing=True, hold_inflight=20)}
    assert hold.admit(A, (A,), queueing, counts(a=8), held=0) is None
