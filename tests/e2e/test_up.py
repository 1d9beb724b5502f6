"""``counterpoise up`` run as an operator runs it: its log, a foreign ``python3`` first on
PATH, a non-root user, a non-editable install used from another folder; stopped by repeated
signals, and started after an earlier ``up`` was killed outright."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from counterpoise import assets, processes
from counterpoise.core.sockets import ListenSocket
from tests.e2e.conftest import Bed, calls_complete
from tests.source_copy import copy_source

pytestmark = pytest.mark.e2e

COUNTERPOISE = Path(sys.executable).parent / "counterpoise"
"""The console script of the install under test (pip writes its interpreter in the
shebang, so PATH does not choose it)."""


class Up:
    """``counterpoise up`` in the background, its output in ``up.log``."""

    def __init__(
        self,
        bed: Bed,
        command: Path,
        *args: str,
        embedded_redis: bool = False,
        port: int | None = None,
        run_dir: Path | None = None,
        **popen: object,
    ) -> None:
        """``embedded_redis``: no ``--redis``, so ``up`` starts its own (as configured by the
        environment given in ``popen``); else the test's Redis. ``port`` and ``run_dir``: those
        of an earlier run (default: new ones)."""
        self.port = port or processes.free_port()
        # /tmp: reachable by nobody
        self.run_dir = run_dir or Path(tempfile.mkdtemp(prefix="cp-up-"))
        with tempfile.NamedTemporaryFile(dir=bed.run_dir, suffix=".log", delete=False) as log:
            self.log = Path(log.name)  # one per run: a second run on the same bed has its own
        argv = [str(command), "up", "--listen", f"udp:127.0.0.1:{self.port}"]
        argv += ["--run-dir", str(self.run_dir), "--workers", "2"]
        if not embedded_redis:
            argv += ["--redis", bed.redis_url]
        self.proc = processes.Process("counterpoise up", [*argv, *args], self.log, **popen)
        bed.adopt(self.proc)
        bed.balancer_port = self.port

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_ready(self) -> None:
        processes.wait_for(
            lambda: "balancer ready" in self.output() or not self.proc.alive(),
            45,
            "counterpoise up to report ready",
        )
        assert self.proc.alive(), self.output()[-3000:]

    def kamailio_pids(self) -> list[int]:
        main = int((self.run_dir / "kamailio.pid").read_text())
        return [main, *(child.pid for child in psutil.Process(main).children(recursive=True))]

    def close(self) -> None:
        self.proc.stop()
        shutil.rmtree(self.run_dir, ignore_errors=True)


def embedded_redis_env(tmp_path: Path) -> dict[str, str]:
    """The environment of an ``up`` that starts its own Redis, on a free port, its data in
    ``tmp_path``."""
    return {
        **os.environ,
        "COUNTERPOISE_REDIS_URL": f"redis://127.0.0.1:{processes.free_port()}/0",
        "COUNTERPOISE_REDIS_DATA_DIR": str(tmp_path / "redis-data"),
    }


@pytest.fixture
def up(bed: Bed) -> Iterator[list[Up]]:
    runs: list[Up] = []
    yield runs
    for run in runs:
        run.close()


@pytest.mark.parametrize("log_file", [False, True])
def test_a_start_up_failure_prints_kamailios_reason(
    bed: Bed, tmp_path: Path, log_file: bool
) -> None:
    not_a_certificate = tmp_path / "cert.pem"
    not_a_certificate.write_text("not a certificate\n")
    port = processes.free_port()
    log = ["--log-file", str(tmp_path / "kamailio.log")] if log_file else []
    result = subprocess.run(
        [str(COUNTERPOISE), "up", "--listen", f"tls:127.0.0.1:{port}",
         "--tls-certificate", str(not_a_certificate), "--tls-private-key", str(not_a_certificate),
         "--redis", bed.redis_url, "--run-dir", str(tmp_path / "run"), *log],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    # Kamailio's own words (from stderr, or the end of its log file), and up's line.
    assert "ERROR: tls" in result.stderr and str(not_a_certificate) in result.stderr
    assert "counterpoise: kamailio exited at start-up" in result.stderr
    if log_file:
        assert "ERROR: tls" in (tmp_path / "kamailio.log").read_text()


def test_foreign_python_first_on_path(bed: Bed, up: list[Up], tmp_path: Path) -> None:
    # A venv of Debian's python3 without its site-packages: its python3 would make the
    # embedded interpreter's sys.prefix a place with no msgpack.
    foreign = tmp_path / "foreign"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(foreign)], check=True)
    path = f"{foreign / 'bin'}{os.pathsep}{os.environ['PATH']}"
    lacks = subprocess.run(["python3", "-c", "import msgpack"], env={"PATH": path}, check=False)
    assert lacks.returncode != 0  # the trap is armed
    run = Up(bed, COUNTERPOISE, env={"PATH": path})
    up.append(run)
    run.wait_ready()
    calls_complete(bed, bed.start_downstream("a"))
    # The agent's entry point too: its interpreter is in its first line, not found on PATH.
    agent = COUNTERPOISE.with_name("counterpoise-agent")
    helped = subprocess.run([agent, "--help"], env={"PATH": path}, capture_output=True, check=False)
    assert helped.returncode == 0, helped.stderr


def test_kamailio_runs_as_the_given_user(bed: Bed, up: list[Up]) -> None:
    run = Up(bed, COUNTERPOISE, "--user", "nobody", "--shm-mb", "96")
    up.append(run)
    run.wait_ready()
    nobody = pwd.getpwnam("nobody").pw_uid
    users = {psutil.Process(pid).uids().effective for pid in run.kamailio_pids()}
    assert users == {nobody}
    argv = psutil.Process(run.kamailio_pids()[0]).cmdline()
    assert argv[argv.index("-m") + 1] == "96"
    assert f"control socket: unixs:{run.run_dir / 'kamailio_ctl'}" in run.output()
    calls_complete(bed, bed.start_downstream("a"))


def test_as_a_user_on_the_embedded_redis_with_its_password(
    bed: Bed, up: list[Up], tmp_path: Path
) -> None:
    # The balancer's password file is root's (0600); Kamailio's processes, as nobody, read the
    # copy up hands them, or the node could not read the pool nor publish.
    env = embedded_redis_env(tmp_path)
    run = Up(bed, COUNTERPOISE, "--user", "nobody", embedded_redis=True, env=env)
    up.append(run)
    run.wait_ready()
    ds = bed.start_downstream("a")

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(COUNTERPOISE), *args], env=env, capture_output=True, text=True, timeout=30
        )

    assert cli("proxy", "add", ds.uri).returncode == 0
    processes.wait_for(
        lambda: '"state": "up"' in cli("proxy", "list", "--json").stdout,
        15,
        "the node to publish the proxy up",
    )
    result = bed.caller(10, 10).wait(60)
    assert (result.successful, result.failed) == (10, 0), result.output[-2000:]
    assert (run.run_dir / "redis.password").stat().st_uid == pwd.getpwnam("nobody").pw_uid
    rotated = cli("dialog-key", "rotate")  # finds the administrator's password by itself
    assert rotated.returncode == 0 and "dialog key 2 made" in rotated.stdout, rotated.stderr


def test_an_unknown_setting_is_refused(bed: Bed) -> None:
    env = {**os.environ, "COUNTERPOISE_FR_TIMER": "800"}
    result = subprocess.run(
        [str(COUNTERPOISE), "proxy", "list", "--redis", bed.redis_url],
        env=env, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "COUNTERPOISE_FR_TIMER" in result.stderr and "fr_timer_ms" in result.stderr


def test_a_runtime_setting_changes_on_sighup_without_a_failed_call(
    bed: Bed, up: list[Up], tmp_path: Path
) -> None:
    config = tmp_path / "counterpoise.toml"
    config.write_text("latency_offset_ms = 10\n")
    run = Up(bed, COUNTERPOISE, env={"COUNTERPOISE_CONFIG": str(config)})
    up.append(run)
    run.wait_ready()
    fast, slow = bed.start_downstream("fast"), bed.start_downstream("slow")
    slow.set_delay_ms(100)  # 100 ms more than fast: with a 10 ms offset, ~1/10 of its weight
    bed.add_pool((fast, 1.0), (slow, 1.0))
    calls = 300
    caller = bed.caller(calls, 15, hold_ms=100)

    def slow_share() -> float:
        return bed.rows().get(slow.uri, {}).get("share") or 0.0

    processes.wait_for(lambda: 0 < slow_share() < 0.25, 15, "the slow proxy's share to fall")
    config.write_text("latency_offset_ms = 100000\n")  # latency no longer tells them apart
    run.proc.signal(signal.SIGHUP)
    processes.wait_for(lambda: slow_share() > 0.4, 10, "the slow proxy's share to rise")
    assert "applied at runtime: {'latency_offset_ms': '100000.0'}" in run.output()
    result = caller.wait(60)
    assert (result.successful, result.failed) == (calls, 0), result.output[-2000:]


def test_installed_package_runs_from_another_folder(bed: Bed, up: list[Up], tmp_path: Path) -> None:
    # A copy of the source (pip writes build/ beside it), installed non-editable into a
    # fresh venv that sees Debian's packages, so nothing is downloaded.
    source = copy_source(tmp_path / "source")
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv)],
                   check=True)  # fmt: skip
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--no-build-isolation", "--no-deps",
         "--no-index", str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    shutil.rmtree(source)  # nothing may come from the source tree
    version = subprocess.run(
        [str(venv / "bin" / "counterpoise"), "--version"], capture_output=True, text=True
    )
    assert version.stdout.startswith("counterpoise 0.")
    shipped = next(venv.glob("lib/python3*/site-packages/counterpoise/_assets"))
    assert set(assets.SHIPPED) <= {str(p.relative_to(shipped)) for p in shipped.rglob("*")}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    clean = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    run = Up(bed, venv / "bin" / "counterpoise", env=clean, cwd=elsewhere)
    up.append(run)
    run.wait_ready()
    calls_complete(bed, bed.start_downstream("a"))


def test_a_second_sigterm_during_the_cleanup_leaves_nothing_running(
    bed: Bed, up: list[Up], tmp_path: Path
) -> None:
    env = embedded_redis_env(tmp_path)
    run = Up(bed, COUNTERPOISE, embedded_redis=True, env=env)
    up.append(run)
    run.wait_ready()
    started = psutil.Process(run.proc.pid).children(recursive=True)
    assert {proc.name() for proc in started} == {"kamailio", "redis-server"}
    # A paused Kamailio cannot act on up's SIGTERM: the cleanup waits out its grace period,
    # and the next signals arrive while it runs.
    os.kill(run.kamailio_pids()[0], signal.SIGSTOP)
    run.proc.popen.send_signal(signal.SIGTERM)
    processes.wait_for(lambda: "stopping kamailio" in run.output(), 10, "up to stop Kamailio")
    run.proc.popen.send_signal(signal.SIGTERM)
    run.proc.popen.send_signal(signal.SIGINT)
    assert run.proc.popen.wait(30) == 0, run.output()[-3000:]
    assert "SIGTERM ignored, already stopping" in run.output()
    assert [proc for proc in started if processes.running(proc.pid)] == []
    processes.check_free(ListenSocket("udp", "127.0.0.1", run.port))


def test_up_stops_the_kamailio_a_killed_up_left_running(bed: Bed, up: list[Up]) -> None:
    first = Up(bed, COUNTERPOISE)
    up.append(first)
    first.wait_ready()
    orphans = [psutil.Process(pid) for pid in first.kamailio_pids()]
    first.proc.popen.send_signal(signal.SIGKILL)  # up cannot clean up: Kamailio outlives it
    first.proc.popen.wait(10)
    assert processes.sip_options("127.0.0.1", first.port) == 200

    second = Up(bed, COUNTERPOISE, port=first.port, run_dir=first.run_dir)
    up.append(second)
    second.wait_ready()
    assert f"stopping Kamailio (pid {orphans[0].pid}) left running" in second.output()
    assert [proc for proc in orphans if processes.running(proc.pid)] == []
    assert processes.sip_options("127.0.0.1", second.port) == 200


def test_up_removes_a_stale_pid_file(bed: Bed, up: list[Up], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # A pid that runs, but no Kamailio: the pid was reused after a crash. It is left alone.
    processes.pid_file(run_dir).write_text(f"{os.getpid()}\n")
    run = Up(bed, COUNTERPOISE, run_dir=run_dir)
    up.append(run)
    run.wait_ready()
    assert f"removing the stale pid file {processes.pid_file(run_dir)}" in run.output()


def test_a_running_up_keeps_its_run_folder(bed: Bed, up: list[Up]) -> None:
    first = Up(bed, COUNTERPOISE)
    up.append(first)
    first.wait_ready()
    second = Up(bed, COUNTERPOISE, run_dir=first.run_dir)
    up.append(second)
    assert second.proc.popen.wait(30) == 1
    assert f"of a running `counterpoise up` (pid {first.proc.pid})" in second.output()
    assert first.proc.alive() and processes.sip_options("127.0.0.1", first.port) == 200
