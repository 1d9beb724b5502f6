"""The metrics of one balancer node, from its sync loop's state and its counters.

Built on demand for a scrape, in the timer process (the only one holding the policy's
state): nothing is added to the per-request path except the node counters the SIP workers
already keep in shared memory (``kamailio.metrics``). Names follow Prometheus' conventions:
``counterpoise_`` prefix, base units (seconds, ratios 0..1), ``_total`` on counters, labels
``node`` and ``proxy``. Every metric is listed with its meaning in docs/monitoring.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from counterpoise.core import load
from counterpoise.core.policy.health import State
from counterpoise.core.sync import SyncLoop
from counterpoise.core.tally import Tally
from counterpoise.monitoring.histogram import Histogram

PROXY = ("node", "proxy")
"""Labels of every per-proxy metric."""

ROUTED_BY_WEIGHT = "routed_weight"
ROUTED_BY_LOCATION = "routed_location"
REJECTED = "rejected"
NO_PROXY = "no_proxy"
HELD = "held"
HELD_OVERDUE = "held_overdue"
SHED = "shed"
SHED_NODE = "shed_node"
IN_DIALOG_RECORD_ROUTE = "in_dialog_record_route"
IN_DIALOG_DIALOG_RECORD = "in_dialog_dialog_record"
FAILOVER = "failover"
NODE_COUNTERS = (
    ROUTED_BY_WEIGHT,
    ROUTED_BY_LOCATION,
    REJECTED,
    NO_PROXY,
    HELD,
    HELD_OVERDUE,
    SHED,
    SHED_NODE,
    IN_DIALOG_RECORD_ROUTE,
    IN_DIALOG_DIALOG_RECORD,
)
"""Node counter names (``kamailio.metrics``); failovers are kept per proxy as
``"failover <uri>"``."""
SKIPPED_LOOKUPS = {"lookup": "redis_skipped", "dialog": "dialog_skipped"}
"""Location counters (``kamailio.location``) of lookups skipped because Redis was down."""


@dataclasses.dataclass
class TickStats:
    """How long the sync loop's ticks took, in the timer process."""

    count: int = 0
    seconds_sum: float = 0.0
    last_s: float = 0.0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.seconds_sum += seconds
        self.last_s = seconds


@dataclasses.dataclass
class NodeView:
    """Everything a scrape shows, gathered by the timer process."""

    sync: SyncLoop
    now_ms: int
    counters: Mapping[str, int]
    """The node's counters, summed over its SIP workers."""
    location_counters: Mapping[str, int]
    inflight: Mapping[str, int]
    ticks: TickStats
    redis_errors: int
    """Failed Redis calls of the timer process."""
    route_times: Histogram = dataclasses.field(default_factory=Histogram)
    """Time initial requests spent in the balancer's route, summed over the workers."""
    edge_counters: Mapping[str, int] = dataclasses.field(default_factory=dict)
    """The edge's counters (``cpedge``, docs/security.md), summed over the processes."""


def render(view: NodeView) -> bytes:
    """The Prometheus text exposition of ``view``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(view))
    return generate_latest(registry)


class _Families(Collector):
    def __init__(self, view: NodeView) -> None:
        self._view = view

    def collect(self) -> Iterator[Metric]:
        yield from proxy_families(self._view)
        yield from node_families(self._view)


def _gauge(name: str, doc: str, labels: tuple[str, ...] = PROXY) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"counterpoise_{name}", doc, labels=list(labels))


def _counter(name: str, doc: str, labels: tuple[str, ...] = PROXY) -> CounterMetricFamily:
    return CounterMetricFamily(f"counterpoise_{name}", doc, labels=list(labels))


def _summary(name: str, doc: str) -> SummaryMetricFamily:
    return SummaryMetricFamily(f"counterpoise_{name}", doc, labels=list(PROXY))


def proxy_families(view: NodeView) -> list[Metric]:
    sync = view.sync
    weight = _gauge("proxy_weight", "Weight this node routes new requests with.")
    share = _gauge("proxy_share", "Share of new requests this node gives the proxy, 0..1.")
    base = _gauge("proxy_base_weight", "Base weight the operator set.")
    state = _gauge(
        "proxy_state", "1 for the proxy's state in the policy, 0 for the others.", (*PROXY, "state")
    )
    latency = _gauge("proxy_latency_estimate_seconds", "Latency estimate L of the policy.")
    latency_factor = _gauge("proxy_latency_factor", "Weight factor from the latency, 0..1.")
    load_factor = _gauge("proxy_load_factor", "Weight factor from the reported load, 0..1.")
    ramp = _gauge("proxy_ramp", "Slow-start ramp factor, 0..1 (1 when not ramping).")
    consecutive = _gauge("proxy_consecutive_failures", "Failures in a row (requests or probes).")
    probe_rtt = _gauge("proxy_probe_round_trip_seconds", "Mean probe round trip, last window.")
    utilisation = _gauge(
        "proxy_utilisation",
        "Reported utilisation per source (report: agent, header: X-CP-Load), 0..1.",
        (*PROXY, "source"),
    )
    counted = _gauge("proxy_utilisation_counted", "Utilisation the weight used, 0..1.")
    inflight = _gauge("proxy_in_flight", "Requests relayed by this node awaiting a final reply.")
    inflight_limit = _gauge(
        "proxy_in_flight_limit",
        "In flight at which this node holds new requests while the proxy queues (0: off).",
    )
    pool_throughput = _gauge(
        "proxy_pool_throughput_per_second",
        "Requests the proxy completes per second for every live node (this one's and its peers').",
    )
    requests = _counter("proxy_requests", "Requests relayed that got an outcome.")
    failures = _counter("proxy_failures", "Requests that timed out or got 408 or 5xx.")
    failovers = _counter("proxy_failovers", "Requests that failed on the proxy and were retried.")
    probes = _counter("proxy_probes", "Probes with an outcome.")
    probe_failures = _counter("proxy_probe_failures", "Probes that timed out or got 408 or 5xx.")
    first = _summary("proxy_first_reply_seconds", "Time to the first reply (not 100), per request.")
    final = _summary("proxy_final_reply_seconds", "Time to the final reply, per request.")
    total_weight = sum(w.weight for w in sync.weights.values())
    for uri in sorted(sync.pool):
        weighting, observed = sync.weights.get(uri), sync.observed.get(uri)
        if weighting is None or observed is None:
            continue  # in the pool since this tick: weighed next tick
        labels = [sync.node, uri]
        weight.add_metric(labels, weighting.weight)
        share.add_metric(labels, weighting.weight / total_weight if total_weight else 0.0)
        base.add_metric(labels, weighting.base_weight)
        for each in State:
            state.add_metric([*labels, each.value], float(weighting.state == each))
        if weighting.latency_ms is not None:
            latency.add_metric(labels, weighting.latency_ms / 1000)
        latency_factor.add_metric(labels, weighting.latency_factor)
        load_factor.add_metric(labels, weighting.load_factor)
        ramp.add_metric(labels, weighting.ramp)
        consecutive.add_metric(labels, observed.health.consecutive_failures)
        if observed.probe_ms is not None:
            probe_rtt.add_metric(labels, observed.probe_ms / 1000)
        for source, described in sync.loads.describe(uri, view.now_ms).items():
            utilisation.add_metric([*labels, source], described["utilisation"])
        if weighting.utilisation is not None:
            counted.add_metric(labels, weighting.utilisation)
        inflight.add_metric(labels, view.inflight.get(uri, 0))
        inflight_limit.add_metric(labels, weighting.inflight_limit)
        pool_throughput.add_metric(labels, sync.share.pool_per_s.get(uri, 0.0))
        totals = sync.totals.get(uri, Tally())
        requests.add_metric(labels, totals.requests_ok + totals.requests_failed)
        failures.add_metric(labels, totals.requests_failed)
        failovers.add_metric(labels, view.counters.get(f"{FAILOVER} {uri}", 0))
        probes.add_metric(labels, totals.probes_ok + totals.probes_failed)
        probe_failures.add_metric(labels, totals.probes_failed)
        first.add_metric(labels, totals.requests_ok, totals.first_reply_ms_sum / 1000)
        final.add_metric(labels, totals.requests_ok, totals.final_reply_ms_sum / 1000)
    return [
        weight, share, base, state, latency, latency_factor, load_factor, ramp, consecutive,
        probe_rtt, utilisation, counted, inflight, inflight_limit, pool_throughput, requests,
        failures, failovers, probes, probe_failures, first, final,
    ]  # fmt: skip


def node_families(view: NodeView) -> list[Metric]:
    sync, counters, node = view.sync, view.counters, view.sync.node
    by_label = (
        (
            "requests_routed",
            "Initial requests relayed, by reason: weight or location record.",
            "reason",
            {"weight": counters.get(ROUTED_BY_WEIGHT, 0),
             "location": counters.get(ROUTED_BY_LOCATION, 0)},
        ),
        (
            "in_dialog_relayed",
            "In-dialog requests relayed, by route: record_route or dialog_record.",
            "route",
            {"record_route": counters.get(IN_DIALOG_RECORD_ROUTE, 0),
             "dialog_record": counters.get(IN_DIALOG_DIALOG_RECORD, 0)},
        ),
        (
            "redis_skipped_lookups",
            "Location lookups skipped because Redis was down, by kind: lookup or dialog.",
            "kind",
            {kind: view.location_counters.get(name, 0) for kind, name in SKIPPED_LOOKUPS.items()},
        ),
        (
            "redis_errors",
            "Failed Redis calls, by process: timer (sync, dialog writes) or workers (location).",
            "process",
            {"timer": view.redis_errors, "workers": view.location_counters.get("redis_errors", 0)},
        ),
        (
            "retries",
            "Failover retries, by outcome: spent, or refused over the retry budget.",
            "outcome",
            {"spent": sync.retries_spent, "refused": sync.retries_refused},
        ),
        (
            "load_inputs_rejected",
            "Load inputs rejected, by source: report (agent) or header (X-CP-Load).",
            "source",
            {source: sync.loads.rejected.get(source, 0) for source in (load.REPORT, load.HEADER)},
        ),
        (
            "edge_events",
            'What the untrusted edge refused or could not read, by event (docs/security.md).',
            "event",
            dict(view.edge_counters),
        ),
    )  # fmt: skip
    families: list[Metric] = []
    for name, doc, label, values in by_label:
        family = _counter(name, doc, ("node", label))
        for label_value, value in values.items():
            family.add_metric([node, label_value], value)
        families.append(family)
    counted = (
        ("requests_rejected", "Initial requests answered 480 (location_fallback reject).",
         counters.get(REJECTED, 0)),
        ("requests_no_proxy", 'Initial requests answered 503 "No Proxy Available".',
         counters.get(NO_PROXY, 0)),
        ("requests_held", "Initial requests held at the balancer (hold_queue_ms).",
         counters.get(HELD, 0)),
        ("requests_held_overdue", "Held requests relayed room or not (hold_max_ms).",
         counters.get(HELD_OVERDUE, 0)),
        ("requests_shed", "Initial requests answered 503 at once, the pool full (shed_hold_ms).",
         counters.get(SHED, 0)),
        ("requests_shed_node", "Initial requests answered 503 on arrival, the node short of CPU"
         " (shed_node_backlog_kb).", counters.get(SHED_NODE, 0)),
        ("ejections_refused", "Proxies kept in by max_ejected_fraction.",
         sync.ejections_refused),
    )  # fmt: skip
    gauges = (
        ("sync_last_tick_seconds", "Duration of the latest tick.", view.ticks.last_s),
        (
            "redis_last_sync_age_seconds",
            "Seconds since the sync loop last read Redis successfully (since start if never).",
            sync.redis_sync_age_ms(view.now_ms) / 1000,
        ),
        ("redis_up", "1 while the sync loop reaches Redis.", float(sync.redis_ok)),
        (
            "panic",
            "1 while every proxy is down and the node routes to all.",
            float(any(w.panic for w in sync.weights.values())),
        ),
        ("proxies", "Proxies in the pool as this node last read it.", len(sync.pool)),
        (
            "pool_share",
            "This node's share of every proxy's capacity, 0..1 (1 alone).",
            sync.share.share,
        ),
        ("pool_nodes", "Live nodes sharing the pool, this one included.", sync.share.nodes),
    )
    for make, table in ((_counter, counted), (_gauge, gauges)):
        for name, doc, value in table:
            family = make(name, doc, ("node",))
            family.add_metric([node], value)
            families.append(family)
    ticks = SummaryMetricFamily(
        "counterpoise_sync_tick_seconds", "Duration of the sync loop's ticks.", labels=["node"]
    )
    ticks.add_metric([node], view.ticks.count, view.ticks.seconds_sum)
    route = HistogramMetricFamily(
        "counterpoise_route_seconds",
        "Time an initial request spent in the balancer's route, arrival in Python to relay.",
        labels=["node"],
    )
    times = view.route_times
    route.add_metric([node], times.cumulative(), times.sum_us / 1e6)
    return [*families, ticks, route]
