"""The in-flight limit while shedding is on (``policy.shed_limit``): the proxy's concurrency
plus ``shed_queue_ms`` of queue, holding new requests while the pool is past its capacity."""

from __future__ import annotations

from counterpoise.core import hold
from counterpoise.core.policy import shed_limit
from counterpoise.core.policy.capacity import Throughput
from counterpoise.core.policy.health import Health, State
from counterpoise.core.policy.latency import Average
from counterpoise.core.policy.observed import Observed
from counterpoise.core.policy.service import Service
from counterpoise.core.policy.shed_limit import PAST_CAPACITY_MEMORY_MS, PastCapacity
from counterpoise.core.policy.weights import weigh
from counterpoise.core.settings import Settings

ON = Settings.of(hold_queue_ms=500, shed_hold_ms=100, shed_queue_ms=100).timers
OFF = Settings.of(hold_queue_ms=500, shed_hold_ms=0, shed_queue_ms=100).timers
BUSY = Service(service_ms=100.0, wait_ms=0.0, sampled_ms=0)
"""A proxy whose workers take 100 ms a request, with no queue."""


def test_the_limit_is_the_concurrency_plus_shed_queue_ms_of_throughput():
    # 40/s x 100 ms: 4 requests on its workers, and 40/s x 100 ms more queued behind.
    assert shed_limit.inflight_limit(40.0, BUSY, 20, ON) == 8
    assert shed_limit.inflight_limit(10.0, BUSY, 5, ON) == 2
    assert shed_limit.inflight_limit(33.0, BUSY, 17, ON) == 7  # ceil(6.6)


def test_the_limit_keeps_a_starved_proxy_growing():
    # Given fewer requests than its workers take, each completes in its service time: the
    # throughput the limit lets through exceeds the one it was sized from.
    throughput = 5.0
    for _ in range(10):
        limit = shed_limit.inflight_limit(throughput, BUSY, 1000, ON)
        through = min(limit / (BUSY.service_ms / 1000), 40.0)  # 4 workers: 40/s at most
        assert through > throughput or through == 40.0
        throughput = through
    assert throughput == 40.0


def test_never_less_than_the_smallest_limit_nor_more_than_the_hold_limit():
    assert shed_limit.inflight_limit(0.0, BUSY, 2, ON) == hold.HOLD_MIN_INFLIGHT
    slow = Service(service_ms=2000.0, wait_ms=0.0, sampled_ms=0)
    assert shed_limit.inflight_limit(40.0, slow, 20, ON) == 20


def test_the_hold_limit_while_shedding_is_off_or_the_service_time_unknown():
    assert shed_limit.inflight_limit(40.0, BUSY, 20, OFF) == 20
    assert shed_limit.inflight_limit(40.0, Service(), 20, ON) == 20
    no_hold = Settings.of(hold_queue_ms=0, shed_hold_ms=100).timers
    assert shed_limit.inflight_limit(40.0, BUSY, 0, no_hold) == 0


def test_new_requests_are_held_at_the_limit_past_capacity_or_behind_a_standing_queue():
    assert not shed_limit.holds_new(BUSY, past_capacity=False, settings=ON)
    assert shed_limit.holds_new(BUSY, past_capacity=True, settings=ON)
    standing = Service(service_ms=100.0, wait_ms=50.0, sampled_ms=0)  # half of shed_queue_ms
    assert shed_limit.holds_new(standing, past_capacity=False, settings=ON)
    brief = Service(service_ms=100.0, wait_ms=49.0, sampled_ms=0)
    assert not shed_limit.holds_new(brief, past_capacity=False, settings=ON)


def test_with_shedding_off_nothing_changes_for_new_requests():
    standing = Service(service_ms=100.0, wait_ms=300.0, sampled_ms=0)
    assert not shed_limit.holds_new(standing, past_capacity=True, settings=OFF)


def test_the_pool_is_past_capacity_for_a_while_after_each_shed():
    past = PastCapacity()
    assert not past.lately(0)
    past = past.observe(0, 1000)
    assert not past.lately(1000)  # nothing shed yet
    past = past.observe(3, 1200)
    assert past.lately(1200) and past.lately(1200 + PAST_CAPACITY_MEMORY_MS - 1)
    assert past.observe(3, 2000) == past  # no new shed: the memory runs from the last one
    assert not past.lately(1200 + PAST_CAPACITY_MEMORY_MS)
    assert past.observe(4, 3400).lately(3400 + PAST_CAPACITY_MEMORY_MS - 1)


def test_the_policy_publishes_both_limits_and_whether_new_requests_are_held():
    settings = Settings.of(hold_queue_ms=500, shed_hold_ms=100, shed_queue_ms=100)
    observed = {
        "sip:a": Observed(
            Health(State.UP, 0), Average(5.0), throughput=Throughput(40.0), service=BUSY
        )
    }
    calm = weigh({"sip:a": 1.0}, set(), observed, 1000, settings)["sip:a"]
    assert (calm.inflight_limit, calm.hold_limit, calm.standing_queue) == (8, 20, False)
    past = weigh({"sip:a": 1.0}, set(), observed, 1000, settings, past_capacity=True)["sip:a"]
    assert past.standing_queue
    off = weigh({"sip:a": 1.0}, set(), observed, 1000, Settings.of(hold_queue_ms=500))["sip:a"]
    assert (off.inflight_limit, off.hold_limit, off.standing_queue) == (20, 20, False)
