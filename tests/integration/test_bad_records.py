"""Bad records in a real Redis never stop the sync loop (issue 11): each is left out, counted
in ``cp:rejects:<node>`` and logged once, and a later change still takes effect."""

from __future__ import annotations

import pytest

from counterpoise.core import reports
from counterpoise.core.pool import Admin
from counterpoise.core.reports import LoadReport
from counterpoise.core.settings import Settings
from counterpoise.store.pool import PoolStore

from ..fakes.sync import WALL_EPOCH_MS, Harness

A, B = "sip:10.0.0.1:5060", "sip:10.0.0.2:5060"
S = Settings()
POOL = f"{S.redis.key_prefix}pool"

BAD_POOL_ENTRIES = {
    "overflow": ("sip:10.0.0.9:5060", '{"weight": 1, "added_ms": 1e999}'),
    "deep-nesting": ("sip:10.0.0.9:5060", "[" * 1000 + "]" * 1000),
    "crlf-uri": ("sip:10.0.0.9:5060\r\nX-Evil: 1", '{"weight": 1}'),
    "comma-uri": ("sip:10.0.0.9:5060,sip:10.0.0.1:5060", '{"weight": 1}'),
    "huge-weight": ("sip:10.0.0.9:5060", '{"weight": 1e308}'),
    "not-utf8": ("sip:10.0.0.9:5060", b"\xff\xfe{"),
}


def rejects(operator: PoolStore) -> dict[str, str]:
    return operator.client.hgetall(f"{S.redis.key_prefix}rejects:lb1")


@pytest.mark.parametrize("case", BAD_POOL_ENTRIES)
def test_bad_pool_record_is_left_out_counted_once_and_a_drain_still_applies(
    harness: Harness, operator: PoolStore, case: str
):
    operator.add(A)
    operator.add(B)
    uri, record = BAD_POOL_ENTRIES[case]
    operator.client.hset(POOL, uri, record)
    operator.client.incr(f"{S.redis.key_prefix}pool:version")
    for _ in range(10):
        harness.tick(200)
    assert set(harness.shared.table) == {A, B}
    assert harness.loop.loads.rejected["pool"] == 1
    assert sum("rejected pool" in line for line in harness.logs) == 1
    operator.set_admin(A, Admin.DRAINED)
    harness.tick(200)
    assert harness.shared.table.get(A, 0) == 0 and harness.shared.table[B] > 0
    assert rejects(operator)["pool"] == "1"


def test_non_integer_pool_version_reloads_every_tick_and_the_cli_still_writes(
    harness: Harness, operator: PoolStore
):
    operator.add(A)
    operator.add(B)
    harness.tick(200)
    operator.client.set(f"{S.redis.key_prefix}pool:version", "not a number")
    harness.tick(200)
    assert set(harness.shared.table) == {A, B}
    operator.set_admin(A, Admin.DRAINED)  # INCR fails; the record is written all the same
    harness.tick(200)
    assert harness.shared.table.get(A, 0) == 0
    assert operator.version() is not None  # the CLI restarted the count
    assert harness.loop.loads.rejected["pool"] == 1
    assert "not an integer" in harness.loop.loads.last_reason["pool"]


def test_replayed_report_is_rejected(harness: Harness, operator: PoolStore):
    operator.add(A)
    harness.tick(200)

    def report(seq: int) -> bytes:
        wall = WALL_EPOCH_MS + harness.clock.now
        return reports.encode(LoadReport(A, seq, wall, cpu_utilisation=0.5))

    old = report(1000)
    operator.put_report(A, old, 3000)
    harness.tick(200)
    operator.put_report(A, report(1001), 3000)
    harness.tick(200)
    assert harness.loop.loads.rejected["report"] == 0
    operator.put_report(A, old, 3000)  # an old report written again (a replay)
    harness.tick(200)
    assert harness.loop.loads.rejected["report"] == 1
    assert "replay" in harness.loop.loads.last_reason["report"]


def test_location_rejections_of_the_workers_reach_cp_rejects(harness: Harness, operator: PoolStore):
    harness.shared.location_rejections = (3, "cp:loc:pin:a@b: proxy: not a string")
    harness.tick(S.redis.publish_interval_ms)
    assert rejects(operator)["location"] == "3"
    assert "cp:loc:pin:a@b" in rejects(operator)["location:last"]
