"""Redis servers the tests start themselves: TLS with a CA made here (openssl) and a unix
socket, both behind a password."""

from __future__ import annotations

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
