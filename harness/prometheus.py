"""A real Prometheus server for tests and demos: scrapes the given targets every second and
evaluates the project's alert rules, on a free port with its own storage directory."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from counterpoise import processes
from harness import REPO

RULES = REPO / "deploy" / "prometheus" / "counterpoise.rules.yml"
SCRAPE_INTERVAL_S = 1
"""Short, so a test sees a change within a second or two; a real one scrapes every 15 s."""


class Prometheus:
    def __init__(
        self, run_dir: Path, jobs: Mapping[str, Sequence[str]], rules: Path = RULES
    ) -> None:
        """``jobs``: job name -> ``host:port`` targets serving ``/metrics``."""
        run_dir.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {
                "scrape_interval": f"{SCRAPE_INTERVAL_S}s",
                "evaluation_interval": f"{SCRAPE_INTERVAL_S}s",
            },
            "rule_files": [str(rules)],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": list(targets)}]}
                for job, targets in jobs.items()
            ],
        }
        config_path = run_dir / "prometheus.yml"
        config_path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        self.port = processes.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [
            "prometheus", f"--config.file={config_path}",
            f"--storage.tsdb.path={run_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]  # fmt: skip
        self.proc = processes.Process("prometheus", argv, run_dir / "prometheus.log")
        self.proc.ensure_started(self._ready, 30.0, f"Prometheus on port {self.port}")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def _api(self, path: str, **params: str) -> object:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=5) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus {path}: {body}")
        return body["data"]

    def query(self, expr: str) -> dict[tuple[tuple[str, str], ...], float]:
        """Instant query: labels (sorted, without ``__name__``) -> value."""
        data = self._api("query", query=expr)
        return {
            tuple(sorted((k, v) for k, v in item["metric"].items() if k != "__name__")): float(
                item["value"][1]
            )
            for item in data["result"]
        }

    def samples(self, selector: str, start_s: float, end_s: float) -> list[tuple[float, float]]:
        """The raw ``(time s, value)`` samples of one series scraped in ``[start_s, end_s]``."""
        window_ms = max(1, round((end_s - start_s) * 1000))
        data = self._api("query", query=f"{selector}[{window_ms}ms]", time=f"{end_s:.3f}")
        if len(data["result"]) != 1:
            raise RuntimeError(f"{selector}: {len(data['result'])} series, expected one")
        return [(float(t), float(v)) for t, v in data["result"][0]["values"]]

    def alerts(self) -> dict[str, set[str]]:
        """Alert name -> states (pending, firing) of its active alerts."""
        states: dict[str, set[str]] = {}
        for alert in self._api("alerts")["alerts"]:
            states.setdefault(alert["labels"]["alertname"], set()).add(alert["state"])
        return states

    def stop(self) -> None:
        self.proc.stop()
