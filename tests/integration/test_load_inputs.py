"""Reported load in the sync loop: agent reports read from a real Redis, X-CP-Load values
from (fake) shared memory, and every bad input rejected, counted, and without effect."""

from __future__ import annotations

import json

import msgpack
import pytest

from counterpoise import processes
from counterpoise.core import reports
from counterpoise.core.reports import LoadReport
from counterpoise.core.settings import Settings
from counterpoise.core.tally import Tally
from counterpoise.store.pool import PoolStore

from ..fakes.sync import WALL_EPOCH_MS, Harness

A, B = "sip:10.0.0.1:5060", "sip:10.0.0.2:5060"
S = Settings()
AGENT_TTL_MS = 3000


@pytest.fixture
def pool(redis_client) -> PoolStore:
    store = PoolStore(redis_client, S.redis.key_prefix)
    store.add(A)
    store.add(B)
    return store


def agent_report(harness: Harness, proxy: str, seq: int, utilisation: float) -> bytes:
    wall = harness.clock.wall_ms()
    return reports.encode(
        LoadReport(proxy=proxy, seq=seq, timestamp_ms=wall, cpu_utilisation=utilisation)
    )


def both_up_and_equal(harness: Harness) -> None:
    """A and B up (past slow start), both answering in 5 ms."""

    def traffic() -> None:
        for uri in (A, B):
            key = f"1 {uri}"
            now = harness.shared.tallies.get(key, Tally())
            harness.shared.tallies[key] = now + Tally(requests_ok=1, first_reply_ms_sum=5)

    harness.run(S.health.slow_start_ms + 1000, each=traffic)
    assert harness.shared.table[A] == pytest.approx(harness.shared.table[B])


def feed_reports(harness: Harness, pool: PoolStore, util: dict[str, float], ms: int) -> None:
    """Agents write a report of each proxy every second for ``ms``."""
    seq = {uri: 0 for uri in util}

    def write() -> None:
        if harness.clock.now % 1000 == 0:
            for uri, value in util.items():
                pool.put_report(uri, agent_report(harness, uri, seq[uri], value), AGENT_TTL_MS)
                seq[uri] += 1

    harness.run(ms, each=write)


def share(harness: Harness, uri: str) -> float:
    table = harness.shared.table
    return table[uri] / sum(table.values())


def test_high_reported_load_loses_share_and_regains_it_when_reports_expire(
    harness: Harness, pool: PoolStore
):
    both_up_and_equal(harness)
    feed_reports(harness, pool, {A: 0.1, B: 0.9}, S.load.load_blackout_ms + 2000)
    # headroom 0.1 vs 0.9: B weighs 1/9 of A.
    assert share(harness, B) == pytest.approx(0.1, abs=0.01)
    record = json.loads(pool.client.hget(f"cp:weights:{harness.loop.node}", B))
    assert record["utilisation"] == 0.9
    assert record["load"]["report"]["counts"] is True
    # The agents stop: within load_expiry_ms the split is latency alone again.
    harness.run(S.load.load_expiry_ms + 200)
    assert share(harness, B) == pytest.approx(0.5, abs=0.01)


def test_reports_in_blackout_do_not_count_yet(harness: Harness, pool: PoolStore):
    both_up_and_equal(harness)
    feed_reports(harness, pool, {A: 0.1, B: 0.9}, S.load.load_blackout_ms - 500)
    assert share(harness, B) == pytest.approx(0.5, abs=0.01)


def test_high_load_header_loses_share(harness: Harness, pool: PoolStore):
    both_up_and_equal(harness)

    def replies() -> None:
        # Every reply's header counts: B's say 50 % and 100 % in turn (a mean of 75 %).
        for uri, values in ((A, (0.0, 0.0)), (B, (0.5, 1.0))):
            key = f"3 {uri}"
            tally = harness.shared.tallies.get(key, Tally())
            for value in values:
                tally = tally.with_load_sample(value)
            harness.shared.tallies[key] = tally

    harness.run(S.load.load_blackout_ms + 500, each=replies)
    assert share(harness, B) == pytest.approx(0.2, abs=0.01)


def absurd(proxy: str, **wire: object) -> bytes:
    data = {"v": 1, "u": proxy, "s": 1, "t": WALL_EPOCH_MS, "p": 1, "r": 0} | wire
    return msgpack.packb(data)


@pytest.mark.parametrize(
    "raw",
    [
        b"\x93garbage",
        absurd(B, c=50.0),
        absurd(B, x=-1),
        absurd(B, cp=float("nan")),
        absurd(B, v=7),
        absurd(A),  # A's report stored under B's key
    ],
    ids=["garbled", "utilisation-50", "negative", "nan", "version", "wrong-proxy"],
)
def test_bad_report_is_rejected_counted_and_changes_no_weight(
    harness: Harness, pool: PoolStore, raw: bytes
):
    both_up_and_equal(harness)
    before = dict(harness.shared.table)
    pool.put_report(B, raw, AGENT_TTL_MS)
    harness.run(S.load.load_blackout_ms + 1000)
    assert harness.shared.table == before
    assert harness.loop.loads.rejected["report"] == 1
    assert sum(B in line and "rejected report" in line for line in harness.logs) == 1
    rejects = pool.client.hgetall(f"cp:rejects:{harness.loop.node}")
    assert rejects["report"] == "1"
    assert rejects["report:last"].startswith(B)


def test_report_for_a_proxy_not_in_the_pool_is_rejected(harness: Harness, pool: PoolStore):
    both_up_and_equal(harness)
    before = dict(harness.shared.table)
    stranger = "sip:10.9.9.9:5060"
    pool.put_report(stranger, agent_report(harness, stranger, 0, 0.5), AGENT_TTL_MS)
    processes.wait_for(
        lambda: harness.tick(100) or harness.loop.loads.rejected["report"] == 1,
        5.0,
        "the announcement of the stranger's report to be read",
    )
    assert "not in the pool" in harness.loop.loads.last_reason["report"]
    assert harness.shared.table == before


def test_rejected_headers_are_counted_from_the_workers_tallies(harness: Harness, pool: PoolStore):
    both_up_and_equal(harness)
    before = dict(harness.shared.table)
    harness.shared.header_reasons[B] = "X-CP-Load: 'junk' is not key=value"
    harness.shared.tallies["2 " + B] = Tally(load_headers_rejected=4)
    harness.run(1200)
    assert harness.shared.table == before
    assert harness.loop.loads.rejected["header"] == 4
    rejects = pool.client.hgetall(f"cp:rejects:{harness.loop.node}")
    assert rejects["header"] == "4"
    assert "junk" in rejects["header:last"]
