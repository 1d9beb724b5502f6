"""Starting, waiting for and stopping the processes Counterpoise runs: Redis, Kamailio, SIPp.

Used by ``counterpoise up``, the demo, the tests and the benchmarks alike. Every process
starts in its own session (process group), so stopping it stops its children too, and every
wait has a deadline.
"""

from __future__ import annotations

import contextlib
import grp
import math
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil

from counterpoise import assets, clock, interpreter
from counterpoise.core import edge
from counterpoise.core.settings import Settings, to_environ
from counterpoise.core.sockets import ListenSocket
from counterpoise.errors import StartError
from counterpoise.run_files import ctl_socket, rpc_socket
from counterpoise.sip_probe import sip_options

REPO = assets.SOURCE_TREE
KAMAILIO_CFG = assets.path("kamailio.cfg")
EMBED_CFG = assets.path("counterpoise.cfg")
EMBED_CFG_INCLUDED = "embed/counterpoise.cfg"
"""The name ``kamailio.cfg`` includes the Counterpoise include by: relative, so that a
``kamailio -f kamailio.cfg`` from the repository root runs too; ``up`` makes it the absolute
path of the tree or the wheel it runs (``--subst``: Kamailio looks a relative name up in its
working directory first)."""
NATIVE_SCRIPT = assets.path("counterpoise_native.py")
INCLUDE_NAME_MAX = 127
"""The longest included file name Kamailio's parser takes (``cfg.lex``, 128 with its NUL)."""
REDIS_CONF = assets.path("redis.conf")

STDERR_FD = 2
"""Where a process started without a log file writes: this process's own stderr (for
``counterpoise up``, the terminal or the journal)."""

PROC_NET_UDP = "/proc/net/udp"
"""Linux's table of IPv4 UDP sockets; each line's second field is ``ADDR:PORT`` in hex, the
address as the kernel's native-order integer."""

STOP_GRACE_S = 5.0
"""How long a process gets to exit after SIGTERM before it is killed."""


def wait_for(condition: Callable[[], object], timeout_s: float, what: str, step_s: float = 0.05):
    """Poll ``condition`` until it returns a true value, or raise TimeoutError naming ``what``."""
    deadline = clock.monotonic_s() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if clock.monotonic_s() >= deadline:
            raise TimeoutError(f"timed out after {timeout_s:.1f} s waiting for {what}")
        clock.sleep_s(step_s)


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


def check_free(sip: ListenSocket, what: str = "SIP address") -> None:
    """StartError unless ``sip``'s address and port can be bound now."""
    family = socket.AF_INET6 if sip.is_ipv6 else socket.AF_INET
    kind = socket.SOCK_DGRAM if sip.proto == "udp" else socket.SOCK_STREAM
    with socket.socket(family, kind) as probe:
        if kind == socket.SOCK_STREAM:  # a port in TIME_WAIT is free to listen on
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((sip.address, sip.port))
        except OSError as error:
            raise StartError(f"{what} {sip} is not available: {error.strerror}") from None


def udp_bound(host: str, port: int) -> bool:
    """Whether some socket is bound to UDP ``host:port`` (IPv4, or the wildcard address on
    that port), read from /proc/net/udp.

    Probing by binding the port would race the process being waited for: a SIPp that
    tries to bind while the probe holds the port exits with EADDRINUSE (status 254)."""
    wanted = {
        f"{int.from_bytes(socket.inet_aton(address), sys.byteorder):08X}:{port:04X}"
        for address in (host, "0.0.0.0")
    }
    lines = Path(PROC_NET_UDP).read_text().splitlines()[1:]
    return any(line.split()[1] in wanted for line in lines if line.strip())


def check_tcp_free(host: str, port: int) -> None:
    """StartError unless the metrics endpoint's address can be bound now."""
    check_free(ListenSocket("tcp", host, port), "metrics address")


class Process:
    """A child process in its own process group, its output sent to a log file (None: to
    this process's stderr)."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path | None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        umask: int = -1,
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
                stdout=output or STDERR_FD,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,
                umask=umask,
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
        """The end of the log file, or where the log went."""
        if not self.log_path:
            return "(its log is above, on stderr)"
        if not self.log_path.exists():
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
        except BaseException:  # interrupted (Ctrl-C): the caller never gets it to stop
            self.stop()
            raise
        if not self.alive():
            status = self.popen.returncode
            raise StartError(
                f"{self.name} exited at start-up (status {status}):\n{self.log_tail()}"
            )


def start_redis(
    port: int,
    data_dir: Path,
    timeout_s: float = 10.0,
    aclfile: Path | None = None,
    also_bind: Sequence[str] = (),
) -> Process:
    """redis-server with ``redis/redis.conf`` on ``port``, its data in ``data_dir``; with
    ``aclfile``, its users from that file (``cli/embedded.py``); listening on the addresses
    ``also_bind`` besides 127.0.0.1 (nodes in other network namespaces reach it there)."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    argv = ["redis-server", str(REDIS_CONF), "--port", str(port), "--dir", str(data_dir)]
    if also_bind:  # a test bed's private link: protected mode would refuse its passwordless peers
        argv += ["--bind", "127.0.0.1", *also_bind, "--protected-mode", "no"]
    if aclfile is not None:
        argv += ["--aclfile", str(aclfile)]
    log = data_dir / "redis.log"
    log.touch(mode=0o600)
    # Every file Redis writes (append-only files, the aclfile ACL SAVE rewrites) is 0600.
    proc = Process("redis-server", argv, log, umask=0o077)

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
    listen: Sequence[str],
    workers: int,
    run_dir: Path,
    defines: dict[str, str | int],
) -> list[str]:
    """Kamailio in the foreground, logging to stderr, on the ``-l`` sockets ``listen``."""
    argv = ["kamailio", "-f", str(cfg), "-DD", "-E"]
    for sip in listen:
        argv += ["-l", sip]
    argv += ["-n", str(workers), "-Y", str(run_dir), "-P", str(pid_file(run_dir))]
    for name, value in defines.items():
        text = f'"{value}"' if isinstance(value, str) else str(value)
        argv += ["-A", f"{name}={text}"]
    return argv


def write_tls_config(path: Path, certificate: Path, private_key: Path) -> None:
    """The tls module's file: one certificate and key for the TLS sockets (server) and for
    connections to TLS proxies (client), TLS 1.2 or newer; peers' certificates unchecked,
    as Kamailio does by default (``verify_certificate`` off)."""
    text = "".join(
        f"[{role}:default]\nmethod = TLSv1.2+\n"
        f"certificate = {certificate.resolve()}\nprivate_key = {private_key.resolve()}\n\n"
        for role in ("server", "client")
    )
    path.write_text(text)


def check_user(user: str, group: str) -> None:
    """StartError unless ``user`` (and ``group``, when given) exist on this host."""
    try:
        pwd.getpwnam(user)
    except KeyError:
        raise StartError(f"--user {user}: no such user") from None
    try:
        if group:
            grp.getgrnam(group)
    except KeyError:
        raise StartError(f"--group {group}: no such group") from None


def hand_over(password_file: Path, run_dir: Path, user: str) -> Path:
    """A copy of ``password_file`` in ``run_dir`` that only ``user`` reads (0600): Kamailio's
    processes open it after dropping root, and the original (the embedded Redis's, 0600
    root's, or the operator's) stays as it is."""
    copy = run_dir / "redis.password"
    copy.unlink(missing_ok=True)
    descriptor = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(password_file.read_text())
    shutil.chown(copy, user)
    return copy


def pid_file(run_dir: Path) -> Path:
    """Where Kamailio writes its main process's pid (and removes it when it exits cleanly)."""
    return run_dir / "kamailio.pid"


def running(pid: int) -> psutil.Process | None:
    """The process ``pid`` if it runs (a zombie has exited: it holds no port or file)."""
    try:
        proc = psutil.Process(pid)
        return None if proc.status() == psutil.STATUS_ZOMBIE else proc
    except (psutil.NoSuchProcess, ValueError):
        return None


def stop_tree(root: psutil.Process, grace_s: float = STOP_GRACE_S) -> None:
    """Stop a process this process did not start (so cannot wait for) and its descendants:
    SIGTERM, SIGKILL after ``grace_s``, then wait until every one is gone. psutil.AccessDenied
    if they are another user's."""
    members = [root, *root.children(recursive=True)]

    def gone() -> bool:
        return not any(running(member.pid) for member in members)

    def send(signum: int) -> None:
        for member in members:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.send_signal(signum)

    what = f"process {root.pid} and its children to exit"
    send(signal.SIGTERM)
    try:
        wait_for(gone, grace_s, what)
    except TimeoutError:
        send(signal.SIGKILL)
        wait_for(gone, grace_s, what)


def balancer_argv(settings: Settings, run_dir: Path, repo: Path = REPO) -> list[str]:
    """Kamailio's command line for a balancer with ``settings`` (sockets, workers, memory,
    user, TLS)."""
    defines: dict[str, str | int] = {
        "CP_SCRIPT": str(repo / NATIVE_SCRIPT.relative_to(REPO)),
        "CP_CTL_SOCKET": f"unixs:{ctl_socket(run_dir)}",
        "CP_RPC_SOCKET": str(rpc_socket(run_dir)),
        "CP_FR_TIMER_MS": settings.failover.fr_timer_ms,
        **flood_defines(settings),
    }
    if settings.edge.sip_signature:  # else kamailio.cfg sends neither header
        defines["CP_SERVER_HEADER"] = f"Server: {settings.edge.sip_signature}"
        defines["CP_USER_AGENT_HEADER"] = f"User-Agent: {settings.edge.sip_signature}"
    if settings.node.tls_certificate:
        tls_config = run_dir / "tls.cfg"
        write_tls_config(
            tls_config, Path(settings.node.tls_certificate), Path(settings.node.tls_private_key)
        )
        defines["CP_TLS_CONFIG"] = str(tls_config)
    listen = [sip.kamailio(settings.node.advertise) for sip in settings.node.listen_sockets()]
    cfg = repo / KAMAILIO_CFG.relative_to(REPO)
    argv = kamailio_argv(cfg, listen, settings.node.workers, run_dir, defines)
    include = included_name(repo / EMBED_CFG.relative_to(REPO), Path.cwd())
    argv += [f'--subst=|^"{EMBED_CFG_INCLUDED}"$|"{include}"|']
    argv += ["-m", str(settings.node.shm_mb), "-x", str(settings.node.memory_manager)]
    if settings.node.user:
        argv += ["-u", settings.node.user]
    if settings.node.group:
        argv += ["-g", settings.node.group]
    return argv


def included_name(include: Path, cwd: Path) -> str:
    """The name by which Kamailio, started in ``cwd``, finds ``include``: its absolute path, or
    the path relative to ``cwd`` when that one is too long (Kamailio's parser takes an
    included file's name up to ``INCLUDE_NAME_MAX`` characters, and looks a relative name
    up in its working directory first)."""
    names = [str(include), os.path.relpath(include, cwd)]
    fitting = [name for name in names if len(name) + 2 <= INCLUDE_NAME_MAX]  # quoted
    if not fitting:
        raise StartError(
            f"{include}: too long a path for Kamailio to include (at most {INCLUDE_NAME_MAX}"
            " characters, quotes included): install Counterpoise in a shorter one"
        )
    return fitting[0]


def flood_defines(settings: Settings) -> dict[str, str | int]:
    """The flood limits, which ``kamailio.cfg`` checks natively (route ``CP_FLOOD``): settings
    read at start-up only, so they are constants of the config."""
    edge_settings = settings.edge
    defines: dict[str, str | int] = {
        "CP_FLOOD_REQUESTS_PER_S": edge_settings.flood_requests_per_s,
        "CP_FLOOD_REGISTERS_PER_S": edge_settings.flood_registers_per_s,
        "CP_FLOOD_BAN_WINDOWS": edge_settings.flood_ban_windows,
        "CP_FLOOD_BAN_S": max(1, math.ceil(edge_settings.flood_ban_ms / 1000)),
    }
    networks = edge.parse_networks(edge_settings.trusted_upstreams)
    if networks:
        defines["CP_TRUSTED_UPSTREAMS"] = ",".join(str(network) for network in networks)
    return defines


def start_balancer(
    settings: Settings,
    run_dir: Path,
    log_path: Path | None = None,
    timeout_s: float = 20.0,
    repo: Path = REPO,
    netns: str = "",
) -> Process:
    """Start Kamailio with the project's kamailio.cfg and wait until it answers OPTIONS on its
    first socket. Its log goes to ``log_path`` (None: this process's stderr); ``repo`` is the
    source tree whose kamailio.cfg and kemi/ run (the benchmark compares versions: another
    tree is given only the settings that differ from the defaults); ``netns``
    a network namespace (``ip netns``) to run it in, whose first socket this one reaches."""
    sockets = settings.node.listen_sockets()
    if not netns:  # a namespace's addresses cannot be bound from here: Kamailio says if taken
        for sip in sockets:
            check_free(sip)
    run_dir.mkdir(parents=True, exist_ok=True)
    if settings.node.user:
        check_user(settings.node.user, settings.node.group)
        if settings.redis.redis_password_file:
            password = hand_over(
                Path(settings.redis.redis_password_file), run_dir, settings.node.user
            )
            settings = settings.with_values(redis_password_file=str(password))
    if not settings.probes.probe_contact_uri:
        contact = sockets[0].uri("counterpoise")
        settings = settings.with_values(probe_contact_uri=contact)
    env = {**to_environ(settings, changed_only=repo != REPO), **interpreter.environ()}
    argv = balancer_argv(settings, run_dir, repo)  # writes the tls module's file into run_dir
    if settings.node.user:
        # Last, once up has written its files: Kamailio writes its pid file and control
        # sockets here after dropping root.
        shutil.chown(run_dir, settings.node.user, settings.node.group or None)
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    proc = Process("kamailio", argv, log_path, env=env)
    first = sockets[0]
    proc.ensure_started(
        lambda: sip_options(first.host, first.port, 0.3, proto=first.proto) == 200,
        timeout_s,
        f"Kamailio to answer OPTIONS on {first}",
    )
    return proc
