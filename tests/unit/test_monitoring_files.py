"""The deploy/ files for Prometheus and Grafana are valid (the e2e test makes each alert fire
and checks the dashboard's metrics exist on the endpoints)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from counterpoise import processes

RULES = processes.REPO / "deploy" / "prometheus" / "counterpoise.rules.yml"
RULE_TESTS = RULES.with_name("counterpoise.rules.test.yml")
DASHBOARD = processes.REPO / "deploy" / "grafana" / "counterpoise.json"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_checks_the_rules() -> None:
    result = subprocess.run(
        ["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 8 rules found" in result.stdout


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_each_alert_fires_on_synthetic_series_after_its_for() -> None:
    result = subprocess.run(
        ["promtool", "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_is_json_whose_panels_query_counterpoise_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "counterpoise"
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert re.search(r"counterpoise_\w+", target["expr"]), target
