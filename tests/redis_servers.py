"""Redis servers the tests start themselves: TLS with a CA made here (openssl) and a unix
socket, both behind a password; a master, its replica and three sentinels."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from counterpoise import processes

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


SERVICE = "cpmaster"
DOWN_AFTER_MS = 1000
"""Sentinels call the master down after this long without an answer (production: 5000)."""


def pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class SentinelSet:
    """One master, one replica and three sentinels (Debian's ``redis-sentinel``, or the
    ``sentinel_command`` given) on free ports. If one of them fails to start, those already
    started are stopped before the error goes up: no caller holds them yet."""

    def __init__(self, folder: Path, sentinel_command: str = "redis-sentinel") -> None:
        self.procs: dict[str, processes.Process] = {}
        self.sentinels: list[int] = []
        try:
            self._start_all(folder, sentinel_command)
        except BaseException:
            self.stop()
            raise

    def _start_all(self, folder: Path, sentinel_command: str) -> None:
        self.master = processes.free_port(socket.SOCK_STREAM)
        self.replica = processes.free_port(socket.SOCK_STREAM)
        for name, port, extra in (
            ("master", self.master, []),
            ("replica", self.replica, ["--replicaof", "127.0.0.1", str(self.master)]),
        ):
            data = folder / name
            data.mkdir(parents=True)
            argv = ["redis-server", "--port", str(port), "--dir", str(data), "--save", "",
                    "--appendonly", "no", *extra]  # fmt: skip
            self._start(name, argv, data / "redis.log", port)
        for index in range(3):
            port = processes.free_port(socket.SOCK_STREAM)
            conf = folder / f"sentinel-{index}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.master} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SERVICE} 10000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
            self._start(
                f"sentinel-{index}", [sentinel_command, str(conf)], folder / f"s{index}.log", port
            )
            self.sentinels.append(port)

    def _start(self, name: str, argv: list[str], log: Path, port: int) -> None:
        proc = processes.Process(name, argv, log)
        self.procs[name] = proc
        proc.ensure_started(lambda: pong(port), 10, f"{name} on {port}")

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()
