"""``rediss://`` (a CA made here with openssl) and ``unix://``: the stores, the CLI and the
agent work on both, redis-py's URL parameters included; no password is printed (issue 11)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from counterpoise import processes
from counterpoise.core import reports
from counterpoise.core.location import Record
from counterpoise.core.reports import LoadReport
from counterpoise.store.client import connect, redact
from counterpoise.store.keys import PIN
from counterpoise.store.location import LocationStore
from counterpoise.store.pool import PoolStore

A = "sip:10.0.0.1:5060"
PASSWORD = "s3cret-pw"


def make_ca(folder: Path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it."""
    files = {
        name: folder / name for name in ("ca.key", "ca.crt", "redis.key", "redis.csr", "redis.crt")
    }

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
            "-keyout", str(files["ca.key"]), "-out", str(files["ca.crt"]))  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", str(files["redis.key"]), "-out", str(files["redis.csr"]))  # fmt: skip
    ext = folder / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", str(files["redis.csr"]), "-CA", str(files["ca.crt"]),
            "-CAkey", str(files["ca.key"]), "-CAcreateserial", "-days", "2",
            "-extfile", str(ext), "-out", str(files["redis.crt"]))  # fmt: skip
    return files


class Servers:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        certs = make_ca(folder)
        self.ca = certs["ca.crt"]
        self.tls_port = processes.free_port()
        self.socket = folder / "redis.sock"
        self.proc = processes.Process(
            "redis-server",
            [
                "redis-server",
                "--port",
                "0",
                "--dir",
                str(folder),
                "--save",
                "",
                "--tls-port",
                str(self.tls_port),
                "--tls-cert-file",
                str(certs["redis.crt"]),
                "--tls-key-file",
                str(certs["redis.key"]),
                "--tls-ca-cert-file",
                str(self.ca),
                "--tls-auth-clients",
                "no",
                "--unixsocket",
                str(self.socket),
                "--unixsocketperm",
                "700",
                "--requirepass",
                PASSWORD,
            ],
            folder / "redis.log",
        )
        self.proc.ensure_started(self.socket.exists, 10, "the unix socket")

    @property
    def tls_url(self) -> str:
        return f"rediss://:{PASSWORD}@127.0.0.1:{self.tls_port}/0?ssl_ca_certs={self.ca}"

    @property
    def unix_url(self) -> str:
        return f"unix://:{PASSWORD}@{self.socket}?db=0"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    servers = Servers(tmp_path_factory.mktemp("tls"))
    yield servers
    servers.proc.stop()


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
