"""counterpoise-agent against a real Redis and a real downstream Kamailio (downstream/proxy.cfg).

(Its command source and option checks, which need neither, are in
``tests/integration/test_agent.py``.)

The agent's ticks are driven by the test with the real clock; waits go through ``wait_for``
with deadlines. The downstream proxy and its SIPp UAS are shared by the module; each test has
a Redis of its own (``own_redis``) since some stop it.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from harness import testbed

from counterpoise.agent.loop import Agent
from counterpoise.agent.sources import KamailioSource
from counterpoise.agent.usage import ProcessSet
from counterpoise.core.reports import LoadReport, decode
from counterpoise.processes import free_port, wait_for
from counterpoise.store.pool import PoolStore

from ..conftest import RedisServer

pytestmark = pytest.mark.e2e

PREFIX = "cp:"
WORKERS = 4
TTL_MS = 1000
TICK_BOUND_S = 1.0
"""A tick with Redis or the proxy gone must still return within this (Redis timeout 250 ms,
source timeout 500 ms)."""


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture(scope="module")
def downstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[testbed.Downstream]:
    run_dir = tmp_path_factory.mktemp("agent-ds")
    uas_port = free_port()
    with contextlib.ExitStack() as stops:
        stops.callback(testbed.start_uas(uas_port, run_dir).stop)
        ds = testbed.Downstream(
            "ds1", free_port(), WORKERS, f"sip:127.0.0.1:{uas_port}", run_dir, registrar=False
        )
        stops.callback(ds.stop)  # before start(): a start that fails halfway is stopped too
        yield ds.start()


def raw_client(server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(server.url, socket_timeout=2, socket_connect_timeout=2)


def make_agent(server: RedisServer, ds: testbed.Downstream, **kwargs: object) -> Agent:
    return Agent(
        ds.uri,
        PoolStore.open(server.url, PREFIX, 250),
        ProcessSet(pidfile=ds.run_dir / "kamailio.pid"),
        source=KamailioSource(ds.rpc),
        ttl_ms=TTL_MS,
        **kwargs,  # type: ignore[arg-type]
    )


def stored(client: redis.Redis, uri: str) -> LoadReport | None:
    data = client.get(f"{PREFIX}report:{uri}")
    return None if data is None else decode(data, now_ms())


def test_report_in_redis_decodes_is_announced_and_expires(
    own_redis: RedisServer, downstream: testbed.Downstream
) -> None:
    client = raw_client(own_redis)
    pubsub = client.pubsub()
    pubsub.subscribe(f"{PREFIX}reports")
    wait_for(lambda: pubsub.get_message(timeout=0.1), 5, "subscription confirmed")
    agent = make_agent(own_redis, downstream, capacity=80.0)

    first = agent.tick(now_ms())
    assert first.cpu_utilisation is None  # no previous CPU sample yet
    time.sleep(0.2)  # let CPU time be measured over a real interval
    second = agent.tick(now_ms())
    report = stored(client, downstream.uri)
    assert report == second
    assert report.error is None
    assert report.seq == first.seq + 1  # the first is the start time in epoch ms
    # main process + WORKERS UDP workers + timer, ctl, ... processes of Kamailio
    assert report.processes > WORKERS
    assert report.rss_bytes > report.processes * 1_000_000
    # An idle proxy (no call in this test) spends a few ms of CPU a second on its timers:
    # far under a fifth of the machine, on a 2-core box shared with other work.
    assert report.cpu_utilisation is not None and report.cpu_utilisation < 0.2
    assert report.transactions == 0
    assert report.calls is None  # proxy.cfg loads no dialog module
    assert report.capacity == 80.0

    message = wait_for(lambda: pubsub.get_message(timeout=0.1), 5, "report announced")
    assert message["data"] == downstream.uri.encode()
    pubsub.close()

    key = f"{PREFIX}report:{downstream.uri}"
    assert 0 < client.pttl(key) <= TTL_MS
    stopped_at = time.monotonic()
    wait_for(lambda: not client.exists(key), 3 * TTL_MS / 1000, "report to expire")
    assert time.monotonic() - stopped_at <= TTL_MS / 1000 + 0.5


def test_transactions_rise_while_calls_are_held_then_fall(
    own_redis: RedisServer, downstream: testbed.Downstream, tmp_path: Path
) -> None:
    client = raw_client(own_redis)
    agent = make_agent(own_redis, downstream)
    agent.tick(now_ms())
    assert stored(client, downstream.uri).transactions == 0

    downstream.set_delay_ms(300)  # 4 workers x 300 ms: ~13 INVITEs/s, we send 20/s
    seen: list[LoadReport] = []

    def loaded() -> bool:
        seen.append(agent.tick(now_ms()))
        return (stored(client, downstream.uri).transactions or 0) >= WORKERS

    caller = testbed.Caller(
        f"127.0.0.1:{downstream.port}", tmp_path, calls=40, rate=20, hold_ms=100
    )
    try:
        started = time.monotonic()
        wait_for(loaded, 10, "transactions to pile up in the report", step_s=0.1)
        rise_s = time.monotonic() - started
        result = caller.wait(60)
    finally:
        caller.stop()
        downstream.set_delay_ms(0)
    assert result.successful == 40, result.output[-2000:]
    peak = max(r.transactions or 0 for r in seen)
    print(f"report reached {WORKERS} transactions {rise_s:.2f} s after calls began; peak {peak}")
    assert rise_s < 5

    fall_started = time.monotonic()
    wait_for(
        lambda: agent.tick(now_ms()).transactions == 0, 10, "transactions back to 0", step_s=0.1
    )
    assert stored(client, downstream.uri).transactions == 0
    print(f"back to 0 transactions {time.monotonic() - fall_started:.2f} s after calls ended")


def test_proxy_that_cannot_be_queried_gives_an_error_report(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    client = raw_client(own_redis)
    agent = Agent(
        "sip:127.0.0.1:9",
        PoolStore.open(own_redis.url, PREFIX, 250),
        ProcessSet(pidfile=tmp_path / "missing.pid"),
        source=KamailioSource(tmp_path / "no.sock"),
    )
    started = time.monotonic()
    report = agent.tick(now_ms())
    assert time.monotonic() - started < TICK_BOUND_S
    assert report.processes == 0 and report.cpu_utilisation is None
    assert report.transactions is None
    assert "missing.pid" in report.error and "JSON-RPC tm.stats" in report.error
    assert stored(client, "sip:127.0.0.1:9") == report

    (tmp_path / "dead.pid").write_text("999999999\n")
    agent.processes = ProcessSet(pidfile=tmp_path / "dead.pid")
    assert "is not running" in agent.tick(now_ms()).error
    agent.processes = ProcessSet(name="no-such-proxy")
    assert "no process named" in agent.tick(now_ms()).error


def test_redis_outage_does_not_stop_the_agent(
    own_redis: RedisServer, downstream: testbed.Downstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="counterpoise.agent")
    agent = make_agent(own_redis, downstream)
    agent.tick(now_ms())
    assert agent.published == 1

    own_redis.stop()
    for _ in range(10):
        started = time.monotonic()
        report = agent.tick(now_ms())
        assert time.monotonic() - started < TICK_BOUND_S
        assert report.error is None  # the proxy is fine; only Redis is gone
        time.sleep(0.1)
    assert agent.redis_down and agent.published == 1
    outage_logs = [r for r in caplog.records if "Redis unreachable" in r.getMessage()]
    assert len(outage_logs) == 1

    own_redis.start()
    restarted = time.monotonic()
    wait_for(lambda: agent.tick(now_ms()) and agent.published > 1, 10, "publishing to resume")
    print(f"publishing resumed {time.monotonic() - restarted:.2f} s after Redis restarted")
    assert not agent.redis_down
    assert stored(raw_client(own_redis), downstream.uri).seq > 10
    assert any("reachable again" in r.getMessage() for r in caplog.records)


def test_command_line_runs_and_exits_0_on_sigterm(
    own_redis: RedisServer, downstream: testbed.Downstream
) -> None:
    client = raw_client(own_redis)
    argv = [
        sys.executable, "-m", "counterpoise.agent",
        "--proxy", downstream.uri, "--redis", own_redis.url, "--interval-ms", "200",
        "--pidfile", str(downstream.run_dir / "kamailio.pid"),
        "--source", "kamailio", "--rpc", str(downstream.rpc), "--capacity", "40",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = wait_for(
            lambda: proc.poll() is not None or stored(client, downstream.uri), 10, "a report"
        )
        assert proc.poll() is None, proc.stderr.read()
        wait_for(
            lambda: (
                proc.poll() is not None
                or ((r := stored(client, downstream.uri)) and r.seq >= first.seq + 2)
            ),
            10,
            "the agent's third report",
        )
        assert proc.poll() is None, proc.stderr.read()
        report = stored(client, downstream.uri)
        assert report.capacity == 40.0 and report.processes > WORKERS and report.error is None
        assert report.cpu_utilisation is not None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
