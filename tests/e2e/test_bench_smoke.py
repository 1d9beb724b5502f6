"""The benchmark harness, in its smoke mode, so it cannot rot: `scripts/bench.sh --smoke`
starts the pool, Counterpoise and dispatcher alg 4, runs every scenario, the sweep, the
overhead bench and the micro-benchmark for seconds each, and writes the report and plots."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from counterpoise import processes

pytestmark = pytest.mark.e2e

SMOKE_TIMEOUT_S = 300
"""The smoke mode takes about a minute and a half; three times that before the test calls
it hung."""

SCENARIOS = {
    "steady", "step", "stall", "kill", "bigstall", "bigkill", "load85", "load95", "load110",
    "load150",
}  # fmt: skip
MULTI_NODE = {
    f"load{load}x{nodes}" for load in (70, 95, 110) for nodes in (2, 3)
} | {"bigstallx2"}  # fmt: skip
"""Several Counterpoise nodes: dispatcher nodes share nothing, so they have none."""


def test_smoke_mode_writes_a_report_with_every_contender(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    run = subprocess.run(
        ["bash", str(processes.REPO / "scripts" / "bench.sh"), "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT_S,
        check=False,
    )

    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["errors"] == []
    for contender, scenarios in (("counterpoise", SCENARIOS | MULTI_NODE), ("ds4", SCENARIOS)):
        runs = [r for r in results["runs"] if r["contender"] == contender]
        assert {r["scenario"] for r in runs} == scenarios
        assert all(r["answered"] > 0 for r in runs), runs
    report = (out / "report.md").read_text()
    for contender, scenarios in (("counterpoise", SCENARIOS | MULTI_NODE), ("ds4", SCENARIOS)):
        rows = [
            [cell.strip() for cell in line.split("|")[1:-1]]
            for line in report.splitlines()
            if line.startswith(f"| {contender} |")
        ]
        # The scenario tables' rows: contender, calls, answered, ...
        scenario_rows = [cells for cells in rows if cells[1].isdigit() and cells[2].isdigit()]
        assert len(scenario_rows) == len(scenarios), report
        assert all(int(cells[2]) > 0 for cells in scenario_rows), scenario_rows
    assert {p.name for p in out.glob("*.png")} >= {"steady.png", "step.png", "capacity.png"}
    assert [r["highest_sustained"] > 0 for r in results["overhead"]] == [True, True]
    assert set(results["pick_us"]) == {"10", "100", "1000"}
