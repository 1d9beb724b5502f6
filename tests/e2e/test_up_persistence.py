"""``counterpoise up`` twice on the same embedded Redis folder: the pool added in between is
still there after the restart, the balancer connects as its own user, the CLI as the operator
(issue 11)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from counterpoise import processes
from counterpoise.store.client import connect

from ..integration.test_roles import private

pytestmark = pytest.mark.e2e


def up(tmp_path: Path, env: dict[str, str]) -> subprocess.Popen:
    sip = processes.free_port()
    log = open(tmp_path / f"up-{sip}.log", "w")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "counterpoise.cli", "up", "--listen", f"127.0.0.1:{sip}",
         "--run-dir", str(tmp_path / f"run-{sip}"), "--workers", "1"],
        env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    processes.wait_for(
        lambda: proc.poll() is not None or processes.sip_options("127.0.0.1", sip) == 200,
        30,
        "counterpoise up to answer",
    )
    assert proc.poll() is None, (tmp_path / f"up-{sip}.log").read_text()
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0


def test_pool_survives_a_restart_of_up(tmp_path: Path) -> None:
    data_dir = tmp_path / "redis-data"
    env = {
        **os.environ,
        "COUNTERPOISE_REDIS_URL": f"redis://127.0.0.1:{processes.free_port()}/0",
        "COUNTERPOISE_REDIS_DATA_DIR": str(data_dir),
    }

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "counterpoise.cli", *args],
            env=env, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip

    first = up(tmp_path, env)
    try:
        for uri in ("sip:127.0.0.1:7001", "sip:127.0.0.1:7002"):
            assert cli("proxy", "add", uri, "--weight", "2").returncode == 0
        assert cli("proxy", "drain", "sip:127.0.0.1:7002").returncode == 0
    finally:
        stop(first)
    assert (data_dir / "appendonlydir").is_dir()
    second = up(tmp_path, env)
    try:
        listed = cli("proxy", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert "sip:127.0.0.1:7001" in listed.stdout and "sip:127.0.0.1:7002" in listed.stdout
        assert '"drained"' in listed.stdout
        admin = connect(
            env["COUNTERPOISE_REDIS_URL"], 2000, password_file=str(data_dir / "default.password")
        )
        # Kamailio answers OPTIONS before its sync loop's first tick connects to Redis.
        others = processes.wait_for(
            lambda: [c for c in admin.client_list() if c["id"] != str(admin.client_id())],
            5,
            "the balancer to connect to Redis",
        )
        assert {c["user"] for c in others} == {"balancer"}, others
        secret = tmp_path / "agent.password"
        made = cli("agent-user", "sip:127.0.0.1:7001", "--password-file", str(secret))
        assert made.returncode == 0, made.stderr
        assert secret.stat().st_mode & 0o777 == 0o600
        assert secret.read_text().strip() not in made.stdout
        # ACL SAVE rewrote users.acl: it and every append-only file stay private.
        assert "user agent-sip-127.0.0.1-7001" in (data_dir / "users.acl").read_text()
        assert private(data_dir) == {}
        agent = connect(
            f"redis://agent-sip-127.0.0.1-7001@{env['COUNTERPOISE_REDIS_URL'][8:]}",
            2000,
            password_file=str(secret),
        )
        agent.set("cp:report:sip:127.0.0.1:7001", "x", px=1000)
        with pytest.raises(redis.exceptions.NoPermissionError):
            agent.hset("cp:pool", "sip:127.0.0.1:7003", '{"weight": 1}')
    finally:
        stop(second)
