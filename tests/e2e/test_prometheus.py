"""A real Prometheus scrapes a balancer and an agent under SIPp load: its series match what
`proxy list --json` shows, and each alert rule of deploy/prometheus fires in its scenario.

One test walks the scenarios in order (each leaves the bed as the next one needs it), so
the 2-core machine starts one set of processes: load inputs rejected, failovers, a proxy
down (the share alert goes pending with it), every proxy down (panic), Redis gone (node not
syncing, agent not publishing), the node stopped (its metrics absent). Rules with a
``for:`` are checked pending, the rest firing.
"""

from __future__ import annotations

import json
import re
import time

import pytest
from harness import testbed
from harness.prometheus import SCRAPE_INTERVAL_S, Prometheus

from counterpoise import processes
from counterpoise.monitoring.read import scrape
from tests.e2e.conftest import Bed

pytestmark = pytest.mark.e2e

DASHBOARD = processes.REPO / "deploy" / "grafana" / "counterpoise.json"


def wait_alert(prom: Prometheus, name: str, timeout_s: float = 30) -> set[str]:
    return processes.wait_for(
        lambda: prom.alerts().get(name), timeout_s, f"alert {name} pending or firing", step_s=0.5
    )


def scraped_around(prom: Prometheus, selector: str, at_s: float) -> list[float]:
    """The values Prometheus scraped of ``selector`` one interval either side of ``at_s``
    (waiting for the scrape after it)."""
    start_s, end_s = at_s - SCRAPE_INTERVAL_S, at_s + SCRAPE_INTERVAL_S

    def window() -> list[float] | None:
        got = prom.samples(selector, start_s, time.time())
        if not got or got[-1][0] < end_s:
            return None
        return [value for t, value in got if t <= end_s]

    return processes.wait_for(window, 10 * SCRAPE_INTERVAL_S, f"{selector} scraped", step_s=0.2)


def by_proxy(series: dict) -> dict[str, float]:
    return {dict(labels)["proxy"]: value for labels, value in series.items()}


def test_prometheus_series_match_proxy_list_and_alerts_fire(bed: Bed) -> None:
    redis_port = processes.free_port()
    redis = processes.start_redis(redis_port, bed.run_dir / "own-redis")
    bed.adopt(redis)  # this test stops Redis: its own, not the session's
    bed.use_redis(f"redis://127.0.0.1:{redis_port}/0")
    a, b = bed.start_downstream("a"), bed.start_downstream("b")
    node_metrics, agent_metrics = processes.free_port(), processes.free_port()
    # Latency noise of this busy machine (a few ms) moves weights by 10 % within a tick; an
    # offset of 1 s flattens it, so a weight holds still between two scrapes and can be
    # compared. Nothing below depends on latency. Slow start stays (8 s, waited out).
    bed.start_balancer(metrics_listen=f"127.0.0.1:{node_metrics}", latency_offset_ms=1000.0)
    bed.add_pool((a, 1), (b, 1))
    agent = testbed.start_agent(
        a, bed.redis_url, ["--source", "none", "--metrics", f"127.0.0.1:{agent_metrics}"]
    )
    bed.adopt(agent)
    prom = Prometheus(
        bed.run_dir / "prometheus",
        {
            "counterpoise": [f"127.0.0.1:{node_metrics}"],
            "counterpoise-agent": [f"127.0.0.1:{agent_metrics}"],
        },
    )
    bed.adopt(prom.proc)
    node = bed.settings.node.node_name()

    # --- under load, then settled: Prometheus shows what `proxy list --json` shows --------
    for ds in (a, b):
        # A steady stated load of 0.5 outweighs the agent's CPU figure of a (which moves
        # with the calls): the load factor holds still too.
        ds.set_load_header("active=2;workers=4")
    for ds in (a, b):  # past the slow-start ramp, during which a weight moves 11 % a second
        bed.wait_state(ds.uri, ("up",))
    result = bed.caller(calls=100, rate=25, hold_ms=100).wait(60)
    assert result.failed == 0

    def matching() -> tuple[dict, dict] | None:
        rows = {row["uri"]: row for row in json.loads(bed.cli("proxy", "list", "--json").stdout)}
        requests = by_proxy(prom.query("counterpoise_proxy_requests_total"))
        if requests != {uri: row["requests"] for uri, row in rows.items()}:
            return None  # the latest scrape or publish is not in yet: one more interval
        if sum(requests.values()) < 100:
            return None  # both agree on a publish from before the last call ended (1 s)
        return rows, requests

    rows, requests = processes.wait_for(
        matching, 10 * SCRAPE_INTERVAL_S, "every call counted, the same in both"
    )
    assert sum(requests.values()) == 100
    for uri, row in rows.items():
        # The weight moves with every latency sample: the one `proxy list` shows (published
        # at updated_ms) lies among what Prometheus scraped one interval either side of it.
        selector = f'counterpoise_proxy_weight{{proxy="{uri}"}}'
        window = scraped_around(prom, selector, row["updated_ms"] / 1000)
        assert min(window) * 0.98 <= row["weight"] <= max(window) * 1.02, (uri, window, row)
        states = prom.query(f'counterpoise_proxy_state{{proxy="{uri}"}} == 1')
        assert [dict(labels)["state"] for labels in states] == [row["state"]]

    # --- the dashboard queries only metrics the endpoints serve -----------------------------
    served = {name for name, _ in scrape(f"http://127.0.0.1:{node_metrics}/metrics")}
    served |= {name for name, _ in scrape(f"http://127.0.0.1:{agent_metrics}/metrics")}
    exprs = [
        t["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"] for t in panel["targets"]
    ]
    queried = {name for expr in exprs for name in re.findall(r"counterpoise_\w+", expr)}
    assert queried and queried <= served, queried - served

    # --- rejected load inputs ------------------------------------------------------------------
    a.set_load_header("garbage")
    caller = bed.caller(calls=100_000, rate=20, hold_ms=100)
    assert wait_alert(prom, "CounterpoiseLoadInputsRejected") == {"firing"}
    a.set_load_header(None)

    # --- failovers: both proxies answer INVITEs with 503, each call tries both --------------
    # (One failing proxy alone is down after 3 failures and back on probation only at the
    # slow-start floor: about 3 % of calls fail over, below the rule's 5 %.)
    for ds in (a, b):
        ds.set_fail_code(503)
    assert wait_alert(prom, "CounterpoiseFailoverRateHigh") == {"pending"}  # for: 1m
    # Each proxy's own counter: the failovers of the one drawn first can raise the alert
    # before a scrape has any of the other's (b's fail_code is set a moment after a's).
    processes.wait_for(
        lambda: prom.query(f'counterpoise_proxy_failovers_total{{proxy="{b.uri}"}} > 0'),
        10 * SCRAPE_INTERVAL_S,
        "b's failovers scraped",
        step_s=0.5,
    )
    for ds in (a, b):
        ds.set_fail_code(0)
    for ds in (a, b):
        bed.wait_state(ds.uri, ("up", "slowstart"))

    # --- a proxy down --------------------------------------------------------------------------
    b.kill()
    processes.wait_for(
        lambda: prom.query(f'counterpoise_proxy_state{{proxy="{b.uri}",state="down"}} == 1'),
        20,
        "b's down series at 1 in Prometheus",
        step_s=0.5,
    )
    assert wait_alert(prom, "CounterpoiseProxyDown") == {"pending"}  # for: 30s
    assert wait_alert(prom, "CounterpoiseShareFarFromBase") == {"pending"}  # for: 5m

    # --- every proxy down: panic ---------------------------------------------------------------
    assert "CounterpoiseAllProxiesDown" not in prom.alerts()  # not while a is up
    a.kill()
    assert wait_alert(prom, "CounterpoiseAllProxiesDown") == {"firing"}
    caller.stop()

    # --- Redis gone ----------------------------------------------------------------------------
    redis.stop()
    assert wait_alert(prom, "CounterpoiseNodeNotSyncing") == {"firing"}
    assert wait_alert(prom, "CounterpoiseAgentNotPublishing") == {"firing"}
    age = prom.query(f'counterpoise_redis_last_sync_age_seconds{{node="{node}"}}')
    assert min(age.values()) > 10

    # --- the node gone ---------------------------------------------------------------------
    balancer = next(proc for proc in bed._procs if proc.name == "kamailio")
    balancer.stop()
    assert wait_alert(prom, "CounterpoiseNodeMetricsAbsent") == {"pending"}  # for: 1m
