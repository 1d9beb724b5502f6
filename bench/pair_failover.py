"""``python -m bench --pair``: the node pair's failover (``harness/failover.py``), once per
shipped VRRP timing and per balancer on the nodes (Counterpoise, then Kamailio's dispatcher:
the same pair, the same kill, per-node state), reported as ``pair.json`` and ``pair.md``: how
long the floating address took to move after the active node's host died, when the survivor
got its first new call, what was lost, and whether the survivor split the calls as the dead
node did. Root is needed (network namespaces); about 80 s per run."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

from harness import failover, vrrp

HEADER = (
    "| balancer | advertisements | master-down interval | address moved | first new call | "
    "node back in | calls ok / failed | placed twice | split before → after | apart |\n"
    "|---|---|---|---|---|---|---|---|---|---|\n"
)


def run(
    out: Path,
    timings: tuple[str, ...] = tuple(vrrp.TIMINGS),
    balancers: tuple[str, ...] = failover.BALANCERS,
    schedule: failover.Schedule | None = None,
) -> dict:
    """Every timing's run of every balancer; ``pair.json`` is rewritten after each, so a
    failed run keeps the ones before it."""
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "loadavg_start": os.getloadavg(),
        "cpus": os.cpu_count(),
        "runs": [],
    }
    for timing in timings:
        for balancer in balancers:
            print(f"pair failover, {balancer}, VRRP timing {timing}", flush=True)
            with tempfile.TemporaryDirectory(prefix="counterpoise-pair-") as work:
                run = failover.run(Path(work), timing, schedule or failover.Schedule(), balancer)
            results["runs"].append(run.summary() | {"split_apart": failover.split_apart(run)})
            (out / "pair.json").write_text(json.dumps(results, indent=1))
    (out / "pair.md").write_text(report(results))
    return results


def report(results: dict) -> str:
    rows = "".join(row(run) for run in results["runs"])
    runs = results["runs"]
    first = runs[0]["schedule"] if runs else dataclasses.asdict(failover.Schedule())
    return (
        "# Node pair: failover of the floating address\n\n"
        f"Started {results['started_utc']} UTC, {results['cpus']} CPUs. Two nodes in two network "
        "namespaces, unicast VRRP (`deploy/keepalived/`), "
        f"{first['rate_per_s']:g} calls/s held {first['hold_ms'] / 1000:g} s to the floating "
        f"address; the active node's host dies at {first['kill_at_s']:g} s, at a random instant "
        "before the next call (link cut, Kamailio and keepalived SIGKILLed), and comes back at "
        f"{first['revive_at_s']:g} s. Times from the "
        'kill; "node back in" from its restart until it holds the address again. '
        "Counterpoise's nodes share Redis (weights, keys, location); dispatcher's nodes "
        "(`bench/dispatcher.cfg`, weight-based alg 9 with the pool's base weights, a SIP OPTIONS "
        "health check) share nothing, each its own list of the same proxies. The split is "
        "each proxy's share of the calls the dead node placed, then of those the survivor "
        'placed; "apart": the largest difference of one share, in points.\n\n' + HEADER + rows
    )


def row(run: dict) -> str:
    timing = run["timing"]
    down_s = vrrp.master_down_s(timing, 100)
    split = " / ".join(
        f"{run['split_before'].get(uri, 0) * 100:.0f}→{run['split_after'].get(uri, 0) * 100:.0f}"
        for uri in run["base_shares"]
    )
    return (
        f"| {run['balancer']} | {vrrp.ADVERT_INTERVAL_S[timing]:g} s | {down_s:.2f} s | "
        f"{run['move_s']:.2f} s | {run['outage_s']:.2f} s | {run['back_s']:.2f} s | "
        f"{run['successful']} / {run['failed']} | {len(run['placed_twice'])} | {split} % | "
        f"{run['split_apart']:.0f} |\n"
    )
