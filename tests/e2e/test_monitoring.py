"""Monitoring end to end: the node's and the agent's metrics endpoints under SIPp load."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import pytest
from harness import REPO, testbed

from counterpoise import control, processes
from counterpoise.monitoring.read import scrape, value
from tests.e2e.conftest import Bed

pytestmark = pytest.mark.e2e


def metrics_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/metrics"


def answers(url: str) -> bool:
    try:
        return bool(scrape(url, timeout_s=1))
    except OSError:
        return False


def test_node_metrics_count_calls_and_show_a_killed_proxy_down(bed: Bed) -> None:
    a, b = bed.start_downstream("a"), bed.start_downstream("b")
    port = processes.free_port()
    bed.start_balancer(metrics_listen=f"127.0.0.1:{port}")
    bed.add_pool((a, 1), (b, 3))
    node = bed.settings.node.node_name()

    result = bed.caller(calls=40, rate=20, hold_ms=100).wait(60)
    assert result.failed == 0

    def settled() -> dict | None:
        samples = scrape(metrics_url(port))
        routed = value(samples, "counterpoise_requests_routed_total", node=node, reason="weight")
        requests = sum(
            value(samples, "counterpoise_proxy_requests_total", proxy=ds.uri) or 0 for ds in (a, b)
        )
        return samples if routed == 40 and requests == 40 else None

    samples = processes.wait_for(settled, 10, "40 calls in the metrics")
    for ds, base in ((a, 1), (b, 3)):
        assert value(samples, "counterpoise_proxy_base_weight", proxy=ds.uri) == base
        assert value(samples, "counterpoise_proxy_state", proxy=ds.uri, state="down") == 0
        assert value(samples, "counterpoise_proxy_in_flight", proxy=ds.uri) == 0
    assert value(samples, "counterpoise_redis_up", node=node) == 1
    # Each routed request timed once; the Python route of an idle node is well under 50 ms.
    assert value(samples, "counterpoise_route_seconds_count", node=node) == 40
    assert value(samples, "counterpoise_route_seconds_bucket", node=node, le="0.05") >= 36
    assert 0 < value(samples, "counterpoise_route_seconds_sum", node=node) < 40 * 0.05
    assert value(samples, "counterpoise_redis_last_sync_age_seconds", node=node) < 1

    a.kill()
    processes.wait_for(
        lambda: (
            value(scrape(metrics_url(port)), "counterpoise_proxy_state", proxy=a.uri, state="down")
            == 1
        ),
        15,
        "the killed proxy's down series at 1",
    )


def test_node_view_over_kamcmd_proxy_show_watch_once_and_debug_route_log(bed: Bed) -> None:
    a, b = bed.start_downstream("a"), bed.start_downstream("b")
    bed.start_balancer()
    first = bed.settings.node.node_name()
    bed.start_balancer(name="second")
    second = bed.settings.node.node_name()
    bed.add_pool((a, 1), (b, 2))
    ctl = processes.ctl_socket(bed.run_dir / "second")

    # The node's own view, served by htable's RPC commands (app_python3 registers none).
    methods = testbed.kamcmd(ctl, "system.listMethods")
    assert "app_python.reload" in methods and "counterpoise" not in methods
    record = processes.wait_for(
        lambda: (
            (text := testbed.kamcmd(ctl, "htable.get", "cpview", b.uri)).startswith("{") and text
        ),
        10,
        "b in cpview",
    )
    assert '"base_weight": 2.0' in record and '"latency_factor"' in record
    assert f'"node": "{second}"' in testbed.kamcmd(ctl, "htable.get", "cpview", "node")
    # ... and over the node's JSON-RPC socket
    rpc = processes.rpc_socket(bed.run_dir / "second")
    answer = control.call(rpc, "htable.get", "cpview", "node")
    assert json.loads(answer["item"]["value"])["node"] == second, answer

    # One line per routed initial request at debug level (off at the default level 2).
    testbed.kamcmd(ctl, "corex.debug", "3")
    assert bed.caller(calls=4, rate=10, hold_ms=50).wait(30).failed == 0
    log = (bed.run_dir / "second.log").read_text(errors="replace")
    # (app_python3 traces each KSR call at debug level too: take the log lines themselves.)
    routed = re.findall(
        r"sr_kemi_core_dbg\(\): counterpoise: routed to (\S+) by weight, attempt 1", log
    )
    assert len(routed) == 4 and set(routed) <= {a.uri, b.uri}, routed

    shown = processes.wait_for(
        lambda: (
            (s := json.loads(bed.cli("proxy", "show", b.uri, "--json").stdout))["nodes"].keys()
            >= {first, second}
            and s
        ),
        10,
        "both nodes' records of b",
    )
    assert shown["base_weight"] == 2
    for record in shown["nodes"].values():
        assert {"weight", "state", "ramp", "panic", "consecutive_failures", "load_factor"} <= set(
            record
        )
    text = bed.cli("proxy", "show", b.uri).stdout
    assert f"node {first}:" in text and "latency_factor" in text and "totals.requests_ok" in text

    once = bed.cli("watch", "--once", "--json")
    assert once.returncode == 0
    rows = json.loads(once.stdout)["rows"]
    assert {row["uri"] for row in rows} == {a.uri, b.uri}
    assert set(rows[0]["per_node"]) == {first, second}
    plain = bed.cli("watch", "--once")  # stdout is a pipe: no screen codes
    assert "\033" not in plain.stdout and b.uri in plain.stdout

    # Only the second node gets calls, and b answers them 200 ms late: that node's latency
    # estimate of b rises and gives it a smaller share; the first node, probing alone, does
    # not: `proxy list` names b under the table.
    b.set_delay_ms(200)
    assert bed.caller(calls=20, rate=10, hold_ms=50).wait(60).failed == 0
    disagreement = processes.wait_for(
        lambda: next(
            (line for line in bed.cli("proxy", "list").stdout.splitlines()
             if line.startswith(f"nodes disagree on {b.uri}:")),
            None,
        ),
        10,
        "proxy list to name b's disagreement",
    )  # fmt: skip
    assert first in disagreement and second in disagreement


def test_up_refuses_a_taken_metrics_port(bed: Bed) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        sip = processes.free_port()
        result = bed.cli("up", "--listen", f"127.0.0.1:{sip}", "--metrics", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert f"metrics address tcp:127.0.0.1:{port} is not available" in result.stderr


def test_demo_prints_where_its_metrics_are(tmp_path) -> None:
    redis_url = f"redis://127.0.0.1:{processes.free_port(socket.SOCK_STREAM)}/0"
    listen = f"127.0.0.1:{processes.free_port()}"
    result = subprocess.run(
        [sys.executable, "-m", "harness.demo", "--listen", listen,
         "--rate", "10", "--duration", "6"],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
        env={**os.environ, "COUNTERPOISE_REDIS_URL": redis_url, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    urls = re.findall(r"(balancer|agent \w+) (http://127\.0\.0\.1:\d+/metrics)", result.stdout)
    assert [name for name, _ in urls[:4]] == [
        "balancer",
        "agent big",
        "agent medium",
        "agent small",
    ]
    assert "\033" not in result.stdout  # a pipe gets no screen codes


def test_location_and_in_dialog_counters(bed: Bed) -> None:
    from tests.e2e.test_location import USERS, Users, registrars

    a, b = registrars(bed, 2)
    port = processes.free_port()
    bed.start_balancer(metrics_listen=f"127.0.0.1:{port}")
    bed.add_pool((a, 1), (b, 1))
    users = Users(bed, USERS[:10])
    users.register()  # no record yet: by weight
    assert users.call().wait(1).failed == 0  # by each user's record
    # Calls to 5 users whose ACK and BYE carry no Route: relayed by their dialog record.
    no_routes = testbed.derived_scenario(
        bed.run_dir, "uac.xml", {"[service]": "[field0]", "[routes]": ""}
    )
    csv = testbed.users_csv(bed.run_dir / "no-routes.csv", USERS[:5], 0)
    caller = bed.caller(5, 10, hold_ms=300, scenario=no_routes, extra=("-inf", str(csv)))
    assert caller.wait(60).failed == 0

    def counted() -> dict | None:
        samples = scrape(metrics_url(port))
        routed, in_dialog = (
            "counterpoise_requests_routed_total",
            "counterpoise_in_dialog_relayed_total",
        )
        found = {
            "weight": value(samples, routed, reason="weight"),
            "location": value(samples, routed, reason="location"),
            "record_route": value(samples, in_dialog, route="record_route"),
            "dialog_record": value(samples, in_dialog, route="dialog_record"),
        }
        return found if found["location"] == 15 and found["dialog_record"] >= 5 else None

    found = processes.wait_for(counted, 10, "the location and dialog counters")
    assert found["weight"] == 10  # the REGISTERs: no record yet
    assert found["record_route"] >= 2 * 10  # each user call's ACK and BYE
    # every BYE of the calls without a route set; an ACK too unless tm matched it first
    assert 5 <= found["dialog_record"] <= 10


def test_requests_answered_503_without_a_proxy_are_counted(bed: Bed) -> None:
    bed.start_uas()
    port = processes.free_port()
    bed.start_balancer(metrics_listen=f"127.0.0.1:{port}")
    url = metrics_url(port)
    processes.wait_for(lambda: answers(url), 10, "the metrics endpoint")  # first tick done

    caller = bed.caller(calls=3, rate=10, hold_ms=50)
    caller.wait(30)

    assert caller.error_codes() == {503: 3}
    assert value(scrape(url), "counterpoise_requests_no_proxy_total") == 3
