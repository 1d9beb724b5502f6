"""What the routes count for the metrics and log at debug level, the node view the timer
keeps for kamcmd, and the endpoint served between ticks, run through the fake ``KSR``."""

from __future__ import annotations

import json
import socket
import threading
import urllib.request

from counterpoise import processes
from counterpoise.core.settings import Settings
from counterpoise.kamailio import htables
from counterpoise.monitoring.read import parse, value

from ..fakes.edge import Node
from ..fakes.ksr import FakeKsr

A, B = "sip:10.0.0.1:5060", "sip:10.0.0.2:5060"
S = Settings.of(location_server=False)


def test_routed_requests_failovers_and_503s_are_counted_and_logged(ksr: FakeKsr, monkeypatch):
    node = Node(ksr, monkeypatch, S)
    node.tick()  # the timer creates the node's counters at 0 (sht_inc does not create keys)
    node.route("INVITE")
    assert ksr.htables[htables.NODE_COUNTERS.name]["no_proxy"] == 1

    node.pool(A, B)
    node.route("INVITE")
    first = node.tried[0]
    node.fail(503)
    second = node.tried[1]
    counters = ksr.htables[htables.NODE_COUNTERS.name]
    assert counters["routed_weight"] == 1  # the first attempt only
    assert counters[f"failover {first}"] == 1 and counters[f"failover {second}"] == 0
    assert ksr.logged("dbg") == [
        f"counterpoise: routed to {first} by weight, attempt 1\n",
        f"counterpoise: routed to {second} by weight, attempt 2\n",
    ]


def test_the_timer_keeps_each_proxys_record_and_the_nodes_in_cpview(ksr: FakeKsr, monkeypatch):
    node = Node(ksr, monkeypatch, S)
    node.pool(A, B, **{B: 3.0})
    view = ksr.htables[htables.PROXY_VIEW.name]
    assert json.loads(view[B])["base_weight"] == 3.0
    assert {"weight", "share", "state", "ramp", "load_factor"} <= set(json.loads(view[A]))
    assert json.loads(view["node"])["proxies"] == [A, B]

    node.store.remove(B)
    node.tick(S.redis.publish_interval_ms)
    assert set(view) == {A, "node"}


def test_the_endpoint_answers_between_ticks_with_the_routes_counts(ksr: FakeKsr, monkeypatch):
    port = processes.free_port(socket.SOCK_STREAM)
    node = Node(
        ksr, monkeypatch, Settings.of(location_server=False, metrics_listen=f"127.0.0.1:{port}")
    )
    node.pool(A)
    node.route("INVITE")
    node.reply(200, after_ms=5)
    got: list[bytes] = []

    def fetch() -> None:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            got.append(response.read())

    client = threading.Thread(target=fetch)
    client.start()
    while client.is_alive():  # Kamailio's rtimer, every 200 ms
        node.tick(200)
        client.join(0.01)
    samples = parse(got[0].decode())
    assert value(samples, "counterpoise_requests_routed_total", reason="weight") == 1
    assert value(samples, "counterpoise_proxy_requests_total", proxy=A) == 1
    assert value(samples, "counterpoise_route_seconds_count") == 1
    assert value(samples, "counterpoise_sync_tick_seconds_count") >= 2
