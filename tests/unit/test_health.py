"""``counterpoise health``, keepalived's check of a pair's node: healthy only when Kamailio
answers OPTIONS on the node's own socket and the sync loop wrote its view recently."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from counterpoise import clock, control, sip_probe
from counterpoise.cli import health
from counterpoise.cli.main import build_parser
from counterpoise.core.settings import CONFIG_ENV, ENV_PREFIX, Settings
from counterpoise.errors import CliError

NOW_MS = 1_800_000_000_000


def check(
    monkeypatch: pytest.MonkeyPatch,
    options_status: int | None,
    view: object,
    *extra: str,
) -> int:
    """Run the command with OPTIONS answered ``options_status`` and the node view's RPC
    answering ``view`` (an exception: raised), at NOW_MS."""
    asked = []

    def sip_options(host: str, port: int, timeout_s: float, proto: str) -> int | None:
        asked.append((proto, host, port))
        return options_status

    def call(rpc: object, method: str, *params: object) -> object:
        assert (method, params) == ("htable.get", ("cpview", "node"))
        if isinstance(view, Exception):
            raise view
        return view

    monkeypatch.setattr(sip_probe, "sip_options", sip_options)
    monkeypatch.setattr(control, "call", call)
    monkeypatch.setattr(clock, "wall_ms", lambda: NOW_MS)
    args = build_parser().parse_args(["health", "--sip", "udp:192.0.2.11:5060", *extra])
    status = health.cmd_health(args, Settings.of())
    assert asked == [("udp", "192.0.2.11", 5060)]
    return status


def node_view(updated_ms: int) -> dict:
    return {"item": {"name": "node", "value": json.dumps({"updated_ms": updated_ms})}}


def test_a_node_answering_with_a_recent_tick_is_healthy(monkeypatch: pytest.MonkeyPatch):
    # 3 publish intervals of 1 s by default: 2999 ms is recent.
    assert check(monkeypatch, 200, node_view(NOW_MS - 2999)) == 0


def test_a_stuck_sync_loop_is_unhealthy(monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(CliError, match="3001 ms ago"):
        check(monkeypatch, 200, node_view(NOW_MS - 3001))
    with pytest.raises(CliError, match="limit 500 ms"):
        check(monkeypatch, 200, node_view(NOW_MS - 501), "--max-sync-age-ms", "500")


def test_no_answer_to_options_is_unhealthy(monkeypatch: pytest.MonkeyPatch):
    for status in (None, 503):
        with pytest.raises(CliError, match=f"got {status}"):
            check(monkeypatch, status, node_view(NOW_MS))


def test_no_view_or_no_rpc_answer_is_unhealthy(monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(CliError, match="has not ticked"):
        check(monkeypatch, 200, {"item": {}})
    with pytest.raises(CliError, match="no answer"):
        check(monkeypatch, 200, control.RpcError("timed out"))


NOT_FOR_THE_CHECK = ("redis", "psutil", "ssl", "counterpoise.processes", "counterpoise.store")
"""What the check must not import: keepalived runs it every second on both nodes, and these
(the Redis client, process control, TLS) made it cost a quarter of a core."""

RUN_THE_CHECK = """
import json, sys
from counterpoise.cli.main import main
status = main(["health", "--rpc", sys.argv[1]])
print(json.dumps({"status": status, "modules": sorted(sys.modules)}))
"""


def test_the_check_reads_the_config_file_but_imports_neither_redis_nor_process_control(
    tmp_path: Path,
):
    # Bound, never listening: the OPTIONS over TCP is refused at once, the check answers 1.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as refusing:
        refusing.bind(("127.0.0.1", 0))
        sip = f"tcp:127.0.0.1:{refusing.getsockname()[1]}"
        config = tmp_path / "counterpoise.toml"
        config.write_text(f'[node]\nlisten = "{sip}"\n')
        environ = {
            name: value for name, value in os.environ.items() if not name.startswith(ENV_PREFIX)
        }
        run = subprocess.run(
            [sys.executable, "-c", RUN_THE_CHECK, str(tmp_path / "rpc.sock")],
            capture_output=True,
            text=True,
            timeout=30,
            env={**environ, CONFIG_ENV: str(config)},
        )
    answer = json.loads(run.stdout)
    assert answer["status"] == 1
    assert f"{sip}: no 200 to OPTIONS (got None)" in run.stderr  # the socket of the file
    modules = set(answer["modules"])
    assert "counterpoise.cli.health" in modules
    heavy = {
        name
        for name in modules
        if any(name == top or name.startswith(f"{top}.") for top in NOT_FOR_THE_CHECK)
    }
    assert heavy == set()
