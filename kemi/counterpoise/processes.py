"""Starting, waiting for and stopping the processes Counterpoise runs: Redis, Kamailio, SIPp.

Used by ``counterpoise up``, the demo, the tests and the benchmarks alike. Every process
starts in its own session (process group), so stopping it stops its children too, and every
wait has a deadline.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KAMAILIO_CFG = REPO / "kamailio.cfg"
KEMI_SCRIPT = REPO / "kemi" / "counterpoise_ksr.py"
REDIS_CONF = REPO / "redis" / "redis.conf"
SIPP_SCENARIOS = REPO / "sipp-scenarios"

STOP_GRACE_S = 5.0
"""How long a process gets to exit after SIGTERM before it is killed."""


class StartError(RuntimeError):
    """A process could not be started; the message is meant for the operator as is."""


def wait_for(condition: Callable[[], object], timeout_s: float, what: str, step_s: float = 0.05):
    """Poll ``condition`` until it returns a true value, or raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout_s:.1f} s waiting for {what}")
        time.sleep(step_s)


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port free for both UDP and TCP on 127.0.0.1 right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            other = socket.SOCK_STREAM if kind == socket.SOCK_DGRAM else socket.SOCK_DGRAM
            with socket.socket(socket.AF_INET, other) as second:
                try:
                    second.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise StartError("no free local port found")


def check_udp_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise StartError(
                f"SIP address {host}:{port}/udp is not available: {error.strerror}"
            ) from None


def sip_options(host: str, port: int, timeout_s: float = 0.5, uri: str | None = None) -> int | None:
    """Send one OPTIONS over UDP and return the status code of the reply, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(timeout_s)
        local_port = sock.getsockname()[1]
        tag = uuid.uuid4().hex[:12]
        target = uri or f"sip:{host}:{port}"
        request = (
            f"OPTIONS {target} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bK{tag}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:check@127.0.0.1>;tag={tag}\r\n"
            f"To: <{target}>\r\n"
            f"Call-ID: {tag}@127.0.0.1\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        try:
            sock.sendto(request.encode(), (host, port))
            data = sock.recv(65535)
        except OSError:
            return None
    try:
        return int(data.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None


class Process:
    """A child process in its own process group, its output sent to a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path | None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        if shutil.which(self.argv[0]) is None and not Path(self.argv[0]).exists():
            raise StartError(f"{self.argv[0]} is not installed (run `bash scripts/install.sh`)")
        output = open(log_path, "ab") if log_path else None  # noqa: SIM115 - kept while running
        try:
            self.popen = subprocess.Popen(
                self.argv,
                stdout=output or subprocess.DEVNULL,
                stderr=subprocess.STDOUT if output else subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,
            )
        finally:
            if output:
                output.close()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signum)

    def stop(self, grace_s: float = STOP_GRACE_S) -> int | None:
        """SIGTERM the group, SIGKILL it after ``grace_s``; returns the exit code."""
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait(grace_s)
        self.signal(signal.SIGKILL)  # stragglers of the group, if any
        return self.popen.returncode

    def kill(self) -> None:
        """SIGKILL the whole group at once, as a crash would end it."""
        self.signal(signal.SIGKILL)
        self.popen.wait(STOP_GRACE_S)

    def log_tail(self, lines: int = 20) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def ensure_started(self, ready: Callable[[], object], timeout_s: float, what: str) -> None:
        """Wait until ``ready()``; if the process dies or the wait times out, stop it and raise
        ``StartError`` with the end of its log."""
        try:
            wait_for(lambda: ready() or not self.alive(), timeout_s, what)
        except TimeoutError as error:
            self.stop()
            raise StartError(f"{self.name}: {error}\n{self.log_tail()}") from None
        if not self.alive():
            raise StartError(f"{self.name} exited at start-up:\n{self.log_tail()}")


def start_redis(
    port: int, data_dir: Path, timeout_s: float = 10.0, aclfile: Path | None = None
) -> Process:
    """redis-server with ``redis/redis.conf`` on ``port``, its data in ``data_dir``; with
    ``aclfile``, its users from that file (``cli/embedded.py``)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = ["redis-server", str(REDIS_CONF), "--port", str(port), "--dir", str(data_dir)]
    if aclfile is not None:
        argv += ["--aclfile", str(aclfile)]
    proc = Process("redis-server", argv, data_dir / "redis.log")

    def pong() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as conn:
                conn.sendall(b"PING\r\n")
                # With the default user off, a running Redis asks for authentication.
                return conn.recv(16).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    proc.ensure_started(pong, timeout_s, f"Redis to answer on 127.0.0.1:{port}")
    return proc


def kamailio_argv(
    cfg: Path,
    listen_host: str,
    listen_port: int,
    workers: int,
    run_dir: Path,
    defines: dict[str, str | int],
) -> list[str]:
    argv = [
        "kamailio", "-f", str(cfg), "-DD", "-E", "-e",
        "-l", f"udp:{listen_host}:{listen_port}",
        "-n", str(workers),
        "-Y", str(run_dir),
        "-P", str(run_dir / "kamailio.pid"),
    ]  # fmt: skip
    for name, value in defines.items():
        text = f'"{value}"' if isinstance(value, str) else str(value)
        argv += ["-A", f"{name}={text}"]
    return argv


def start_balancer(
    listen_host: str,
    listen_port: int,
    run_dir: Path,
    env: dict[str, str],
    fr_timer_ms: int,
    workers: int = 4,
    log_path: Path | None = None,
    timeout_s: float = 20.0,
    shm_mb: int | None = None,
) -> Process:
    """Start Kamailio with the project's kamailio.cfg and wait until it answers OPTIONS.
    ``shm_mb``: Kamailio's shared memory (``-m``), when not its default of 64 MB."""
    check_udp_free(listen_host, listen_port)
    run_dir.mkdir(parents=True, exist_ok=True)
    argv = kamailio_argv(
        KAMAILIO_CFG,
        listen_host,
        listen_port,
        workers,
        run_dir,
        {
            "CP_KEMI_SCRIPT": str(KEMI_SCRIPT),
            "CP_CTL_SOCKET": f"unixs:{run_dir / 'ctl.sock'}",
            "CP_FR_TIMER_MS": fr_timer_ms,
        },
    )
    if shm_mb:
        argv += ["-m", str(shm_mb)]
    if not env.get("COUNTERPOISE_PROBE_CONTACT_URI"):
        env = {
            **env,
            "COUNTERPOISE_PROBE_CONTACT_URI": f"sip:counterpoise@{listen_host}:{listen_port}",
        }
    proc = Process("kamailio", argv, log_path, env=env)
    proc.ensure_started(
        lambda: sip_options(listen_host, listen_port, 0.3) == 200,
        timeout_s,
        f"Kamailio to answer OPTIONS on {listen_host}:{listen_port}",
    )
    return proc
