"""The agent's metrics: its last publish age grows while Redis is down, its failed writes
are counted, and the real ``counterpoise-agent --metrics`` serves them over HTTP."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

from counterpoise import processes
from counterpoise.agent.loop import Agent
from counterpoise.agent.metrics import AgentCollector
from counterpoise.agent.usage import ProcessSet
from counterpoise.monitoring.read import scrape, value
from counterpoise.store.pool import PoolStore

from ..conftest import RedisServer

PROXY = "sip:127.0.0.1:9"


def samples_of(collector: AgentCollector) -> dict[str, float]:
    return {
        sample.name: sample.value for family in collector.collect() for sample in family.samples
    }


def test_publish_age_grows_and_errors_count_while_redis_is_down(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    agent = Agent(
        PROXY, PoolStore.open(own_redis.url, "cp:", 250), ProcessSet(pidfile=tmp_path / "no.pid")
    )
    wall = {"ms": 1_000_000}
    collector = AgentCollector(agent, lambda: wall["ms"], started_ms=wall["ms"])
    assert agent.tick(wall["ms"]) and agent.published == 1
    wall["ms"] += 500
    seen = samples_of(collector)
    assert seen["counterpoise_agent_last_publish_age_seconds"] == 0.5
    assert seen["counterpoise_agent_publishes_total"] == 1
    assert seen["counterpoise_agent_redis_up"] == 1

    own_redis.stop()
    for _ in range(3):
        wall["ms"] += 1000
        agent.tick(wall["ms"])  # the backoff lets some of these try, and fail
    seen = samples_of(collector)
    assert seen["counterpoise_agent_last_publish_age_seconds"] == 3.5
    assert seen["counterpoise_agent_publish_errors_total"] >= 1
    assert seen["counterpoise_agent_redis_up"] == 0


def test_the_agent_command_serves_its_metrics(own_redis: RedisServer, tmp_path: Path) -> None:
    port = processes.free_port(socket.SOCK_STREAM)
    argv = [
        sys.executable, "-m", "counterpoise.agent", "--proxy", PROXY, "--redis", own_redis.url,
        "--pidfile", str(tmp_path / "no.pid"), "--metrics", f"127.0.0.1:{port}",
    ]  # fmt: skip
    agent = processes.Process("agent", argv, tmp_path / "agent.log")
    try:

        def published() -> float | None:
            try:
                samples = scrape(f"http://127.0.0.1:{port}/metrics", timeout_s=1)
            except OSError:
                return None
            return value(samples, "counterpoise_agent_publishes_total", proxy=PROXY)

        assert processes.wait_for(published, 10, "the agent's metrics with a publish") >= 1
    finally:
        agent.stop()
