"""The sync loop while its Redis is dead or hung, and after it comes back.

Each test has a Redis of its own (``own_redis``) since it stops it. The loop's clock is fake,
so the backoff schedule is exact; the one real-time measure is how long a tick takes with
Redis unavailable, which the design bounds by ``redis_timeout_ms`` (only the timer process
talks to Redis, and a tick must stay short even when Redis is gone).
"""

from __future__ import annotations

import json
import time

import pytest

from counterpoise.core.settings import Settings
from counterpoise.store.client import connect
from counterpoise.store.pool import PoolStore

from ..conftest import RedisServer
from ..fakes.sync import Harness

A, B, C = "sip:10.0.0.1:5060", "sip:10.0.0.2:5060", "sip:10.0.0.3:5060"
S = Settings()
STEP_MS = 50
TICK_BOUND_S = 2 * S.redis.redis_timeout_ms / 1000


def operator(server: RedisServer) -> PoolStore:
    return PoolStore(connect(server.url, 2000), S.redis.key_prefix)


def timed_ticks(harness: Harness, duration_ms: int) -> list[float]:
    """Tick every STEP_MS of fake time; the real seconds each tick took."""
    durations = []
    for _ in range(duration_ms // STEP_MS):
        harness.clock.advance(STEP_MS)
        started = time.monotonic()
        harness.loop.tick()
        durations.append(time.monotonic() - started)
    return durations


def redis_attempts(harness: Harness) -> list[int]:
    return [t for _, t in harness.store.calls]


def expected_attempts(first: int, until: int) -> list[int]:
    """Attempt times of the backoff (250, 500, 1000, 2000, 2000 ... ms) from ``first``."""
    times, delay, t = [], 0, first
    while t <= until:
        times.append(t)
        delay = min(max(2 * delay, S.redis.redis_backoff_initial_ms), S.redis.redis_backoff_max_ms)
        t += delay
    return times


def start_loop(server: RedisServer) -> tuple[Harness, PoolStore]:
    op = operator(server)
    op.add(A)
    op.add(B)
    harness = Harness(PoolStore.open(server.url, S.redis.key_prefix, S.redis.redis_timeout_ms), S)
    harness.tick()
    assert set(harness.shared.table) == {A, B}
    assert harness.loop.redis_ok
    return harness, op


def test_dead_redis_keeps_the_table_backs_off_and_recovers(own_redis: RedisServer):
    harness, op = start_loop(own_redis)
    calls_before = len(harness.store.calls)
    probes_before = len(harness.probes.sent)

    own_redis.stop()
    outage_start = harness.clock.now
    durations = timed_ticks(harness, 4000)  # 80 ticks, none may raise

    # Every tick returns within 2x the Redis timeout, though Redis is gone.
    assert max(durations) < TICK_BOUND_S, durations
    # The workers keep routing on the last pool (its weights still ramping up: 4 s of 8).
    assert harness.shared.table == {A: pytest.approx(0.55), B: pytest.approx(0.55)}
    assert set(harness.loop.pool) == {A, B}
    assert not harness.loop.redis_ok
    # Probes go on without Redis: 4 more rounds to both proxies.
    assert len(harness.probes.sent) - probes_before == 8
    # Backoff: 5 attempts in 80 ticks, at 0, 250, 750, 1750 and 3750 ms after the first.
    attempts = redis_attempts(harness)[calls_before:]
    first = outage_start + STEP_MS
    assert attempts == expected_attempts(first, harness.clock.now)
    assert attempts == [first + d for d in (0, 250, 750, 1750, 3750)]
    assert sum("unreachable" in line for line in harness.logs) == 1

    # Redis comes back on the same port with the same data; the pool changes meanwhile.
    own_redis.start()
    op = operator(own_redis)
    assert set(op.pool()) == {A, B}  # the pool survived the restart
    op.remove(B)
    op.add(C)
    next_try = attempts[-1] + S.redis.redis_backoff_max_ms
    while harness.clock.now < next_try - STEP_MS:
        harness.tick(STEP_MS)
        assert set(harness.shared.table) == {A, B}  # not retried before the backoff ends
    assert redis_attempts(harness)[calls_before:] == attempts
    harness.tick(STEP_MS)
    assert harness.clock.now == next_try
    assert set(harness.shared.table) == {A, C}
    assert harness.loop.redis_ok
    assert any("reachable again" in line for line in harness.logs)

    # Publishing resumes within one publish interval.
    harness.run(S.redis.publish_interval_ms, step_ms=STEP_MS)
    published = op.client.hgetall("cp:weights:lb1")
    assert set(published) == {A, C}
    assert json.loads(published[C])["state"] == "slowstart"


def test_hung_redis_costs_at_most_one_timeout_per_tick(own_redis: RedisServer):
    harness, op = start_loop(own_redis)
    calls_before = len(harness.store.calls)
    own_redis.pause()
    try:
        outage_start = harness.clock.now
        durations = timed_ticks(harness, 1000)
    finally:
        own_redis.resume()
    attempts = redis_attempts(harness)[calls_before:]
    first = outage_start + STEP_MS
    assert attempts == [first, first + 250, first + 750]
    assert max(durations) < TICK_BOUND_S, durations
    # The ticks that tried really waited on the hung server (so the bound above was tested),
    # and the others did not touch Redis at all.
    slow = [d for d in durations if d >= 0.8 * S.redis.redis_timeout_ms / 1000]
    assert len(slow) == len(attempts)
    assert set(harness.shared.table) == {A, B}

    op.add(C)
    deadline = attempts[-1] + S.redis.redis_backoff_max_ms
    while C not in harness.shared.table:
        assert harness.clock.now <= deadline, "pool change not seen after the backoff"
        harness.tick(STEP_MS)
    assert harness.loop.redis_ok


@pytest.mark.parametrize("advance_ms", [0, 100])
def test_loop_started_while_redis_is_down_routes_nothing_then_loads(
    own_redis: RedisServer, advance_ms: int
):
    op = operator(own_redis)
    op.add(A)
    own_redis.stop()
    harness = Harness(
        PoolStore.open(own_redis.url, S.redis.key_prefix, S.redis.redis_timeout_ms), S
    )
    started = time.monotonic()
    harness.tick(advance_ms)
    assert time.monotonic() - started < TICK_BOUND_S
    assert harness.shared.table == {}
    assert harness.probes.sent == []
    own_redis.start()
    deadline = harness.clock.now + S.redis.redis_backoff_initial_ms
    while A not in harness.shared.table:
        assert harness.clock.now <= deadline
        harness.tick(STEP_MS)
    loaded_at = harness.clock.now
    harness.run(S.probes.probe_interval_ms, step_ms=STEP_MS)
    assert len(harness.probes.times(A)) == 1
    assert harness.probes.times(A)[0] - loaded_at <= S.probes.probe_interval_ms
