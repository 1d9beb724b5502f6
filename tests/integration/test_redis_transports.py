"""``rediss://`` (a CA made here with openssl) and ``unix://``: the stores, the CLI and the
agent work on both, redis-py's URL parameters included; no password is printed (issue 11)."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
import redis

from counterpoise import processes
from counterpoise.core import reports
from counterpoise.core.location import PendingWrite, Record
from counterpoise.core.reports import LoadReport
from counterpoise.store.client import connect, redact
from counterpoise.store.keys import DIALOG, PIN
from counterpoise.store.location import LocationStore
from counterpoise.store.pool import PoolStore

from ..redis_servers import PASSWORD, Servers

A = "sip:10.0.0.1:5060"


@pytest.mark.parametrize("which", ["tls_url", "unix_url"])
def test_stores_work_over_tls_and_unix_sockets(servers: Servers, which: str) -> None:
    url = getattr(servers, which)
    client = connect(url, 2000)
    client.flushdb()
    pool = PoolStore(client, "cp:")
    pool.add(A, 2.0)
    version, configs, rejected = pool.versioned_pool()  # the bytes client
    assert (version, configs[A].base_weight, rejected) == (1, 2.0, {})
    report = reports.encode(LoadReport(A, 1, 1, cpu_utilisation=0.5))
    pool.put_report(A, report, 3000)
    assert pool.poll([A]) == (1, [report])
    locations = LocationStore(connect(url, 2000), "cp:")
    locations.put(PIN, "u@h", Record(A, 1))
    assert locations.lookup("u@h", "h")[0] == Record(A, 1)
    _flushes_a_dialog(locations)


def _flushes_a_dialog(locations: LocationStore) -> None:
    """The timer's dialog flush (``Store.send_all``, its own packing) over the transport."""
    record = Record(A, 1, 2, "f", "t", "198.51.100.7")
    write = PendingWrite.setting("call-1", record, 60_000)
    assert locations.apply_dialogs([write], 1, 10).written == 1
    assert locations.get(DIALOG, "call-1") == record


@pytest.mark.parametrize("which", ["tls_url", "unix_url"])
def test_cli_and_agent_over_tls_and_unix_print_no_password(servers: Servers, which: str) -> None:
    url = getattr(servers, which)
    connect(url, 2000).flushdb()

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "counterpoise.cli", *args, "--redis", url],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip

    added = cli("proxy", "add", A, "--weight", "3")
    assert added.returncode == 0, added.stderr
    listed = cli("proxy", "list", "--json")
    assert listed.returncode == 0 and A in listed.stdout, listed.stderr
    agent = subprocess.Popen(
        [sys.executable, "-m", "counterpoise.agent", "--proxy", A, "--interval-ms", "100",
         "--process-name", "no-such-process-here"],
        env={**__import__("os").environ, "COUNTERPOISE_REDIS_URL": url},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        raw = connect(url, 2000, decode=False)
        processes.wait_for(lambda: raw.get(f"cp:report:{A}"), 10, "the agent's report")
    finally:
        agent.terminate()
        _, stderr = agent.communicate(timeout=10)
    for text in (added.stdout, added.stderr, listed.stdout, listed.stderr, stderr):
        assert PASSWORD not in text


def test_redact_masks_passwords_only() -> None:
    assert redact("redis://u:pw@h:1/0") == "redis://u:***@h:1/0"
    assert (
        redact("rediss://:pw@h:1/0?ssl_ca_certs=/ca.crt")
        == "rediss://:***@h:1/0?ssl_ca_certs=/ca.crt"
    )
    assert redact("unix:///run/r.sock?db=0&password=pw") == "unix:///run/r.sock?db=0&password=***"
    assert (
        redact("redis+sentinel://u:pw@a:1,b:2/mymaster/0")
        == "redis+sentinel://u:***@a:1,b:2/mymaster/0"
    )
    assert redact("redis://h:6379/0") == "redis://h:6379/0"


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel:///mymaster",  # no sentinel
        "redis+sentinel://h:1/",  # no service
        "redis+sentinel://h:1/svc/x",  # db not a number
        "redis+sentinel://h/svc",  # no port
        "redis+sentinel://u:pw@h:1,h2/svc",
    ],
)
def test_bad_sentinel_urls_are_one_clear_error_without_the_password(url: str) -> None:
    with pytest.raises(ValueError, match=r"sentinel|host:port") as error:
        connect(url, 100)
    assert "pw" not in str(error.value)


def test_sentinel_url_names_service_db_and_credentials() -> None:
    client = connect("redis+sentinel://u:p%40ss@127.0.0.1:1,[::1]:2/svc/3", 100)
    pool = client.connection_pool
    assert pool.service_name == "svc"
    assert [
        (c.connection_pool.connection_kwargs["host"], c.connection_pool.connection_kwargs["port"])
        for c in pool.sentinel_manager.sentinels
    ] == [("127.0.0.1", 1), ("::1", 2)]
    assert (pool.connection_kwargs["db"], pool.connection_kwargs["username"]) == (3, "u")
    assert pool.connection_kwargs["password"] == "p@ss"


def test_rediss_sentinel_finds_a_tls_master(servers: Servers, tmp_path) -> None:
    """``rediss+sentinel://``: a sentinel (reached in clear) names the TLS master of the
    ``servers`` fixture; the client connects to it over TLS with the URL's CA parameter."""
    certs = {name: servers.folder / name for name in ("redis.crt", "redis.key")}
    port = processes.free_port(socket.SOCK_STREAM)
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        "tls-replication yes\n"
        f"tls-cert-file {certs['redis.crt']}\ntls-key-file {certs['redis.key']}\n"
        f"tls-ca-cert-file {servers.ca}\n"
        f"sentinel monitor tlsmaster 127.0.0.1 {servers.tls_port} 1\n"
        f"sentinel auth-pass tlsmaster {PASSWORD}\n"
    )
    sentinel = processes.Process(
        "redis-sentinel", ["redis-sentinel", str(conf)], tmp_path / "s.log"
    )
    try:
        url = (
            f"rediss+sentinel://:{PASSWORD}@127.0.0.1:{port}/tlsmaster/0?ssl_ca_certs={servers.ca}"
        )
        client = processes.wait_for(lambda: _answering(url), 10, "the sentinel to name the master")
        pool = PoolStore(client, "cp:")
        pool.add(A, 2.0)
        assert pool.versioned_pool()[1][A].base_weight == 2.0  # the bytes twin, over TLS too
        _flushes_a_dialog(LocationStore(client, "cp:"))
    finally:
        sentinel.stop()


def _answering(url: str):
    client = connect(url, 1000)
    try:
        client.ping()
    except (redis.RedisError, OSError):
        return None
    return client
