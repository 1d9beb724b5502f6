"""Bad records written with ``redis-cli`` into a running balancer's Redis (issue 11): the node
keeps routing, a later ``proxy drain`` takes effect within a second, every rejection is
counted in ``cp:rejects:<node>``."""

from __future__ import annotations

import subprocess
import urllib.parse

import pytest

from counterpoise import processes

from .conftest import Bed, invite_counts, settled_count

pytestmark = pytest.mark.e2e

BAD = "sip:127.0.0.1:9"
"""A proxy URI no good record names."""


def bad_records(prefix: str) -> list[list[str]]:
    """Every bad record of the issue, as redis-cli arguments."""
    crlf_proxy = '{"proxy": "sip:127.0.0.1:9\\r\\nX-Evil: 1", "since_ms": 1}'
    return [
        ["HSET", f"{prefix}pool", "sip:127.0.0.1:11", '{"weight": 1, "added_ms": 1e999}'],
        ["HSET", f"{prefix}pool", "sip:127.0.0.1:12", "[" * 5000 + "]" * 5000],
        ["HSET", f"{prefix}pool", "sip:127.0.0.1:13\r\nX-Evil: 1", '{"weight": 1}'],
        ["HSET", f"{prefix}pool", "sip:127.0.0.1:14,sip:127.0.0.1:15", '{"weight": 1}'],
        ["HSET", f"{prefix}pool", "sip:127.0.0.1:16", '{"weight": 1e308}'],
        ["HSET", f"{prefix}pool", "sip:127.0.0.1:17", '{"weight": 1e308}'],
        ["SET", f"{prefix}loc:pin:service@127.0.0.1", crlf_proxy],
        ["SET", f"{prefix}loc:domain:127.0.0.1", '{"proxy": "' + BAD + '", "since_ms": 1e999}'],
        ["SET", f"{prefix}pool:version", "not-an-integer"],
    ]


def redis_cli(url: str, *args: str) -> str:
    port = urllib.parse.urlsplit(url).port
    done = subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=10
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_bad_records_leave_routing_and_drains_working(bed: Bed) -> None:
    a, b = bed.start_downstream("a"), bed.start_downstream("b")
    bed.start_balancer()
    bed.add_pool((a, 1), (b, 1))
    caller = bed.caller(calls=300, rate=20, hold_ms=100)
    processes.wait_for(lambda: min(invite_counts([a, b]).values()) >= 10, 20, "calls flowing")

    for command in bad_records(bed.settings.redis.key_prefix):
        redis_cli(bed.redis_url, *command)
    before = invite_counts([a, b])
    processes.wait_for(
        lambda: min(c - before[n] for n, c in invite_counts([a, b]).items()) >= 20,
        20,
        "20 more calls on each proxy with the bad records in Redis",
    )

    drained = bed.cli("proxy", "drain", a.uri)
    assert drained.returncode == 0, drained.stderr
    at_drain = settled_count(lambda: a.counts()["invite"], 1.0, "new calls to drained a")
    result = caller.wait(90)

    assert result.failed == 0, result.output[-2000:]
    assert a.counts()["invite"] == at_drain, "the drain did not take effect within 1 s"
    rejects = bed.store.client.hgetall(
        f"{bed.settings.redis.key_prefix}rejects:{bed.settings.node.node_name()}"
    )
    # 6 pool records and the version; the two location records at least once each.
    assert int(rejects["pool"]) >= 7, rejects
    assert int(rejects["location"]) >= 2, rejects
    log = (bed.run_dir / "balancer.log").read_text(errors="replace")
    assert log.count("rejected pool of sip:127.0.0.1:16") == 1  # logged once
    assert "Traceback" not in log
