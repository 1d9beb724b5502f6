"""The pool as an operator sees it: one row per proxy, from Redis alone.

A row merges the operator's record (``cp:pool``) with what the balancer nodes published
(``cp:weights:<node>``): state, weight and latency from the most recent node; requests in
flight and request counts summed over all nodes; ``per_node`` keeps each node's state,
weight and share, and ``disagreements`` names the proxies the nodes see differently.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from counterpoise import clock
from counterpoise.core.load import HEADER, LOCATION, POOL, REPORT
from counterpoise.core.settings import Settings
from counterpoise.core.sync import EDGE_COUNTER_PREFIX
from counterpoise.store.pool import PoolStore

REJECT_SOURCES = (REPORT, HEADER, POOL, LOCATION)

COLUMNS = (
    ("proxy", "uri", "{}"),
    ("admin", "admin", "{}"),
    ("state", "state", "{}"),
    ("base", "base_weight", "{:g}"),
    ("weight", "weight", "{:.3f}"),
    ("share", "share", "{:.1%}"),
    ("latency ms", "latency_ms", "{:.1f}"),
    ("probe ms", "probe_ms", "{:.1f}"),
    ("load", "utilisation", "{:.0%}"),
    ("agent", "agent_load", "{:.0%}"),
    ("in flight", "inflight", "{}"),
    ("requests", "requests", "{}"),
    ("failed", "failed", "{}"),
    ("req share", "request_share", "{:.1%}"),
)


PER_NODE = ("state", "weight", "share", "node_share", "nodes", "inflight_limit")
SHARE_DISAGREEMENT = 0.10
"""Shares two nodes give a proxy that differ by more than this (10 points) are shown as a
disagreement: nodes see the same proxies, and their own latency samples move a share by a
few points (measured: weights of idle proxies vary by about 10 % between ticks on a busy
host); beyond that one node sees something the others do not (a network path, its own
calls' latency, a stale pool)."""


def disagreements(rows: list[dict]) -> list[str]:
    """One line per proxy whose nodes disagree on its state or (by more than 10 points) share."""
    lines = []
    for row in rows:
        views = row.get("per_node", {})
        states = {view["state"] for view in views.values()}
        shares = [view["share"] or 0.0 for view in views.values()]
        if len(states) > 1 or (shares and max(shares) - min(shares) > SHARE_DISAGREEMENT):
            each = ", ".join(
                f"{node} {view['state']} weight {view['weight']:.3f} share {view['share']:.1%}"
                for node, view in views.items()
            )
            lines.append(f"nodes disagree on {row['uri']}: {each}")
    return lines


def node_shares(rows: list[dict]) -> list[str]:
    """One line per node: its share of the pool and its in-flight limits
    (``core.policy.share``), from what it published of each proxy."""
    by_node: dict[str, dict[str, dict]] = {}
    for row in rows:
        for node, view in row.get("per_node", {}).items():
            by_node.setdefault(node, {})[row["uri"]] = view
    lines = []
    for node, views in sorted(by_node.items()):
        first = next(iter(views.values()))
        if first.get("node_share") is None:
            continue  # a node from before shares were published
        limits = ", ".join(f"{uri} {view.get('inflight_limit')}" for uri, view in views.items())
        lines.append(
            f"node {node}: {first['node_share']:.1%} of the pool ({first.get('nodes')} nodes),"
            f" in-flight limits {limits}"
        )
    return lines


def pool_rows(store: PoolStore, settings: Settings, now_ms: int) -> list[dict]:
    pool = store.pool()
    published = store.node_weights(now_ms, settings.redis.node_ttl_ms)
    rows = []
    for uri, config in sorted(pool.items()):
        records = [by_uri[uri] for by_uri in published.values() if uri in by_uri]
        latest = max(records, key=lambda r: r.get("updated_ms", 0), default={})
        totals = [r.get("totals", {}) for r in records]
        rows.append(
            {
                "uri": uri,
                "admin": config.admin,
                "base_weight": config.base_weight,
                "state": latest.get("state", "unknown"),
                "weight": latest.get("weight"),
                "share": latest.get("share"),
                "latency_ms": latest.get("latency_ms"),
                "first_reply_ms": latest.get("first_reply_ms"),
                "probe_ms": latest.get("probe_ms"),
                "utilisation": latest.get("utilisation"),
                "agent_load": latest.get("load", {}).get("report", {}).get("utilisation"),
                "inflight": sum(int(r.get("inflight", 0)) for r in records),
                "requests": sum(
                    t.get("requests_ok", 0) + t.get("requests_failed", 0) for t in totals
                ),
                "failed": sum(t.get("requests_failed", 0) for t in totals),
                "updated_ms": latest.get("updated_ms"),
                "nodes": sorted(node for node, by_uri in published.items() if uri in by_uri),
                "per_node": {
                    node: {key: by_uri[uri].get(key) for key in PER_NODE}
                    for node, by_uri in sorted(published.items())
                    if uri in by_uri
                },
            }
        )
    all_requests = sum(row["requests"] for row in rows)
    for row in rows:
        row["request_share"] = row["requests"] / all_requests if all_requests else 0.0
    return rows


def rejected_inputs(store: PoolStore, settings: Settings, now_ms: int) -> list[str]:
    """One line per node that rejected inputs (``cp:rejects:<node>``): load reports and
    headers, pool records, location records; and one per node whose edge refused or could
    not read something (docs/security.md)."""
    lines = []
    for node, counts in sorted(store.node_rejects(now_ms, settings.redis.node_ttl_ms).items()):
        parts = [
            f"{source} {counts[source]} (last: {counts.get(source + ':last', '?')})"
            for source in REJECT_SOURCES
            if str(counts.get(source, "0")).isdigit() and int(counts.get(source, 0))
        ]
        if parts:
            lines.append(f"node {node} rejected: " + "; ".join(parts))
        edge = [
            f"{name.removeprefix(EDGE_COUNTER_PREFIX)} {count}"
            for name, count in sorted(counts.items())
            if name.startswith(EDGE_COUNTER_PREFIX) and str(count).isdigit() and int(count)
        ]
        if edge:
            lines.append(f"node {node} edge: " + ", ".join(edge))
    return lines


def render(rows: list[dict]) -> str:
    header = [title for title, _, _ in COLUMNS]
    body = [
        [fmt.format(row[key]) if row.get(key) is not None else "-" for _, key, fmt in COLUMNS]
        for row in rows
    ]
    widths = [max(len(cell) for cell in column) for column in zip(header, *body, strict=True)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in [header, *body]
    ]
    if not rows:
        lines.append("(no proxies: add one with `counterpoise proxy add sip:HOST:PORT`)")
    return "\n".join(lines)


def report(store: PoolStore, settings: Settings, now_ms: int) -> str:
    """The table, each node's share and limits, then the nodes' disagreements and rejected
    inputs, if any."""
    rows = pool_rows(store, settings, now_ms)
    lines = [render(rows), *node_shares(rows), *disagreements(rows)]
    lines += rejected_inputs(store, settings, now_ms)
    return "\n".join(lines)


def watch(
    store: PoolStore,
    settings: Settings,
    interval_s: float,
    footer: Callable[[], str] | None = None,
    duration_s: float = 0,
    once: bool = False,
    as_json: bool = False,
    screen: bool = True,
) -> int:
    """Redraw the table every ``interval_s`` until Ctrl-C, or for ``duration_s`` if set, or
    once. ``screen``: clear the terminal before each table (only on a terminal: a pipe or a
    file gets the tables one after the other); ``as_json``: one JSON line per refresh."""
    end = clock.monotonic_s() + duration_s if duration_s > 0 else float("inf")
    try:
        while clock.monotonic_s() < end:
            now_ms = clock.wall_ms()
            if as_json:
                text = json.dumps({"time_ms": now_ms, "rows": pool_rows(store, settings, now_ms)})
            else:
                heading = f"{clock.local_time_of_day()}  counterpoise pool\n"
                text = heading + report(store, settings, now_ms)
                if footer:
                    text += "\n\n" + footer()
                text = ("\033[2J\033[H" if screen else "") + text + ("" if screen else "\n")
            print(text, flush=True)
            if once:
                break
            clock.sleep_s(interval_s)
    except KeyboardInterrupt:
        pass
    return 0
