"""``python -m bench --pair``: the node pair's failover (``harness/failover.py``), once per
shipped VRRP timing, reported as ``pair.json`` and ``pair.md``: how long the floating address
took to move after the active node's host died, when the survivor got its first new call,
and what was lost. Root is needed (network namespaces); about 80 s per timing."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from harness import failover, vrrp

HEADER = (
    "| advertisements | master-down interval | address moved | first new call | "
    "node back in | calls ok / failed | placed twice |\n|---|---|---|---|---|---|---|\n"
)


def run(out: Path, timings: tuple[str, ...] = tuple(vrrp.TIMINGS)) -> dict:
    """Every timing's run; ``pair.json`` is rewritten after each, so a failed run keeps the
    ones before it."""
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "loadavg_start": os.getloadavg(),
        "cpus": os.cpu_count(),
        "runs": [],
    }
    for timing in timings:
        print(f"pair failover, VRRP timing {timing}", flush=True)
        with tempfile.TemporaryDirectory(prefix="counterpoise-pair-") as work:
            run = failover.run(Path(work), timing)
        results["runs"].append(run.summary())
        (out / "pair.json").write_text(json.dumps(results, indent=1))
    (out / "pair.md").write_text(report(results))
    return results


def report(results: dict) -> str:
    rows = "".join(row(run) for run in results["runs"])
    return (
        "# Node pair: failover of the floating address\n\n"
        f"Started {results['started_utc']} UTC, {results['cpus']} CPUs. Two nodes in two network "
        "namespaces, unicast VRRP (`deploy/keepalived/`), 30 calls/s held 20 s to the "
        "floating address; the active node's host dies at 15 s (link cut, Kamailio and "
        'keepalived SIGKILLed) and comes back at 28 s. Times from the kill; "node back in" '
        "from its restart until it holds the address again.\n\n" + HEADER + rows
    )


def row(run: dict) -> str:
    timing = run["timing"]
    down_s = vrrp.master_down_s(timing, 100)
    return (
        f"| {vrrp.ADVERT_INTERVAL_S[timing]:g} s | {down_s:.2f} s | {run['move_s']:.2f} s | "
        f"{run['outage_s']:.2f} s | {run['back_s']:.2f} s | {run['successful']} / "
        f"{run['failed']} | {len(run['placed_twice'])} |\n"
    )
