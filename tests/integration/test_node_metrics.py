"""The node's metrics from a real sync loop (fake clock, real Redis): names follow
Prometheus' conventions, values are the loop's, they go on while Redis is down, and the
thread-free scrape server answers."""

from __future__ import annotations

import socket
import threading
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from counterpoise import processes
from counterpoise.core.policy.health import State
from counterpoise.core.settings import Settings
from counterpoise.core.tally import Tally
from counterpoise.monitoring import node
from counterpoise.monitoring.read import parse, value
from counterpoise.monitoring.scrape import ListenError, ScrapeServer
from counterpoise.store.client import connect
from counterpoise.store.pool import PoolStore

from ..conftest import RedisServer
from ..fakes.sync import Harness

A, B = "sip:10.0.0.1:5060", "sip:10.0.0.2:5060"
S = Settings()


def view(harness: Harness, counters: dict[str, int] | None = None) -> node.NodeView:
    return node.NodeView(
        sync=harness.loop,
        now_ms=harness.clock.monotonic_ms(),
        counters=counters or {},
        location_counters={"redis_skipped": 4},
        inflight={A: 2},
        ticks=node.TickStats(count=10, seconds_sum=0.01, last_s=0.001),
        redis_errors=harness.loop.redis_errors,
        edge_counters={"banned": 1, "dropped_banned": 4800},
    )


def started(server: RedisServer) -> Harness:
    operator = PoolStore(connect(server.url, 2000), S.redis.key_prefix)
    operator.add(A, 1)
    operator.add(B, 3)
    harness = Harness(PoolStore.open(server.url, S.redis.key_prefix, S.redis.redis_timeout_ms), S)
    harness.tick()
    harness.shared.tallies["7 " + A] = Tally(
        requests_ok=8, requests_failed=2, first_reply_ms_sum=80
    )
    harness.tick(200)
    return harness


def test_names_follow_prometheus_conventions_and_values_are_the_loops(own_redis: RedisServer):
    harness = started(own_redis)
    text = node.render(view(harness, {node.ROUTED_BY_WEIGHT: 10, f"{node.FAILOVER} {A}": 1}))
    families = list(text_string_to_metric_families(text.decode()))
    for family in families:
        assert family.name.startswith("counterpoise_"), family.name
        assert "_ms" not in family.name, family.name  # base units: seconds
        for sample in family.samples:
            if family.type == "counter":
                assert sample.name.endswith("_total"), sample.name
            if family.name.startswith("counterpoise_proxy_"):
                assert {"node", "proxy"} <= set(sample.labels), sample
    samples = parse(text.decode())
    assert value(samples, "counterpoise_proxy_requests_total", proxy=A) == 10
    assert value(samples, "counterpoise_proxy_failures_total", proxy=A) == 2
    assert value(samples, "counterpoise_proxy_first_reply_seconds_sum", proxy=A) == 0.08
    assert value(samples, "counterpoise_proxy_failovers_total", proxy=A) == 1
    assert value(samples, "counterpoise_proxy_in_flight", proxy=A) == 2
    assert value(samples, "counterpoise_proxy_base_weight", proxy=B) == 3
    weights = harness.loop.weights
    assert value(samples, "counterpoise_proxy_weight", proxy=B) == weights[B].weight
    for uri in (A, B):
        states = {s: value(samples, "counterpoise_proxy_state", proxy=uri, state=s) for s in State}
        assert states == {s: float(s == weights[uri].state) for s in State}
    shares = [value(samples, "counterpoise_proxy_share", proxy=uri) for uri in (A, B)]
    assert sum(shares) == pytest.approx(1.0)
    assert value(samples, "counterpoise_requests_routed_total", reason="weight") == 10
    assert value(samples, "counterpoise_redis_skipped_lookups_total", kind="lookup") == 4
    assert value(samples, "counterpoise_redis_up") == 1
    assert value(samples, "counterpoise_edge_events_total", event="dropped_banned") == 4800
    # Alone on its Redis: the whole pool, and the limits of its own throughput.
    assert value(samples, "counterpoise_pool_share") == 1.0
    assert value(samples, "counterpoise_pool_nodes") == 1
    for uri in (A, B):
        limit = value(samples, "counterpoise_proxy_in_flight_limit", proxy=uri)
        assert limit == weights[uri].inflight_limit
        throughput = value(samples, "counterpoise_proxy_pool_throughput_per_second", proxy=uri)
        assert throughput == harness.loop.observed[uri].throughput.per_s


def test_metrics_go_on_while_redis_is_down(own_redis: RedisServer):
    harness = started(own_redis)
    own_redis.stop()
    harness.run(5000, step_ms=200)
    samples = parse(node.render(view(harness)).decode())
    assert value(samples, "counterpoise_redis_up") == 0
    # backoff: 250, 500, 1000 ms...
    assert value(samples, "counterpoise_redis_errors_total", process="timer") >= 3
    assert value(samples, "counterpoise_redis_last_sync_age_seconds") == pytest.approx(5.0)
    assert value(samples, "counterpoise_proxy_base_weight", proxy=B) == 3  # the last pool


def test_scrape_server_answers_metrics_and_404_without_threads_of_its_own():
    port = processes.free_port(socket.SOCK_STREAM)
    server = ScrapeServer(f"127.0.0.1:{port}")
    results: dict[str, object] = {}

    def client() -> None:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            results["body"] = response.read()
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=5)
        except urllib.error.HTTPError as error:
            results["other"] = error.code

    thread = threading.Thread(target=client)
    thread.start()
    try:
        while thread.is_alive():  # the timer process polls once per tick
            server.poll(lambda: b"counterpoise_up 1\n")
            thread.join(0.01)
    finally:
        server.close()
    assert results == {"body": b"counterpoise_up 1\n", "other": 404}
    with pytest.raises(ListenError):
        ScrapeServer("no-port")
