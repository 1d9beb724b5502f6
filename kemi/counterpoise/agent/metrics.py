"""The agent's own metrics (``counterpoise-agent --metrics HOST:PORT``).

The agent is a plain Python process, so prometheus_client's own HTTP server thread serves
them; a collector reads the agent's state at each scrape. The alert that matters is the last
publish age: an agent that cannot write to Redis leaves its proxy without a reported load.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from counterpoise.agent.loop import Agent
from counterpoise.monitoring.scrape import parse_listen


class AgentCollector(Collector):
    def __init__(self, agent: Agent, wall_ms: Callable[[], int], started_ms: int) -> None:
        self._agent = agent
        self._wall_ms = wall_ms
        self._started_ms = started_ms

    def collect(self) -> Iterator[Metric]:
        agent, labels = self._agent, [self._agent.proxy]
        published = agent.published_ms if agent.published_ms is not None else self._started_ms

        def gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
            family = GaugeMetricFamily(f"counterpoise_agent_{name}", doc, labels=["proxy"])
            if value is not None:
                family.add_metric(labels, value)
            return family

        yield gauge(
            "last_publish_age_seconds",
            "Seconds since the agent last wrote a report to Redis (since start if never).",
            (self._wall_ms() - published) / 1000,
        )
        yield gauge(
            "redis_up", "1 while the agent's writes reach Redis.", float(not agent.redis_down)
        )
        report = agent.last_report
        yield gauge(
            "cpu_utilisation",
            "CPU the proxy's processes used, of what they may use, 0..1.",
            report.cpu_utilisation if report else None,
        )
        yield gauge(
            "transactions",
            "Transactions in progress the proxy stated.",
            report and report.transactions,
        )
        yield gauge("capacity", "The operator's --capacity hint.", agent.capacity)
        yield gauge(
            "processes", "Processes of the proxy found.", report.processes if report else None
        )
        yield gauge(
            "resident_memory_bytes", "Their resident memory.", report.rss_bytes if report else None
        )
        yield gauge(
            "source_error",
            "1 when the proxy could not be fully measured.",
            float(bool(report and report.error)),
        )
        for name, doc, value in (
            ("publishes", "Reports written to Redis.", agent.published),
            ("publish_errors", "Failed writes to Redis.", agent.redis.errors),
        ):
            family = CounterMetricFamily(f"counterpoise_agent_{name}", doc, labels=["proxy"])
            family.add_metric(labels, value)
            yield family


def serve(listen: str, agent: Agent, wall_ms: Callable[[], int]) -> None:
    """Serve ``agent``'s metrics on ``listen`` from a daemon thread."""
    host, port = parse_listen(listen)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(agent, wall_ms, wall_ms()))
    start_http_server(port, addr=host, registry=registry)
