"""The demo pool: downstream Kamailio proxies in front of a SIPp UAS, and SIPp callers.

Shared by the demo (``harness/demo.py``), the end-to-end tests and the benchmarks, so all
three run the same real processes. The downstream proxy is ``downstream/proxy.cfg`` (see its
README): its capacity comes from workers sleeping ``cpdemo.delay_ms`` per INVITE, changeable
at run time over its control socket.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

from counterpoise import processes
from counterpoise.core import location
from harness import REPO

DOWNSTREAM_CFG = REPO / "downstream" / "proxy.cfg"
SIPP_SCENARIOS = REPO / "sipp-scenarios"


def kamcmd(ctl_socket: Path, *args: str, timeout_s: float = 5.0) -> str:
    result = subprocess.run(
        ["kamcmd", "-s", f"unixs:{ctl_socket}", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"kamcmd {' '.join(args)}: {result.stderr.strip() or result.stdout}")
    return result.stdout


def statistics(ctl_socket: Path, group: str = "all") -> dict[str, int]:
    """Kamailio statistics as ``{"core:rcv_requests_invite": 12, ...}``."""
    stats = {}
    for line in kamcmd(ctl_socket, "stats.get_statistics", group).splitlines():
        name, sep, value = line.strip().partition(" = ")
        if sep and value.strip().lstrip("-").isdigit():
            stats[name] = int(value)
    return stats


class Downstream:
    """One downstream Kamailio proxy of the pool."""

    def __init__(
        self,
        name: str,
        port: int,
        workers: int,
        uas_uri: str,
        run_dir: Path,
        registrar: bool,
        transport: str = "udp",
        tls: tuple[Path, Path] | None = None,
        load_counts_only: bool = False,
        host: str = "127.0.0.1",
        call_log: bool = False,
    ) -> None:
        """``transport``: how the balancer reaches it (``tcp``, ``tls``: a socket of that kind
        beside the UDP one, same port; ``tls`` needs ``tls``, the certificate and key);
        ``load_counts_only``: its ``X-CP-Load`` states requests in progress, no ``busy``;
        ``host``: the address it listens on (one balancers in other namespaces reach);
        ``call_log``: log the Call-ID of each INVITE transaction it creates."""
        self.name = name
        self.host = host
        self.call_log = call_log
        self.port = port
        self.transport = transport
        self.tls = tls
        self.workers = workers
        self.uas_uri = uas_uri
        self.run_dir = run_dir / name
        self.registrar = registrar
        self.load_counts_only = load_counts_only
        self.ctl = self.run_dir / "ctl.sock"
        self.rpc = self.run_dir / "kamailio_rpc.sock"
        self.proc: processes.Process | None = None

    @property
    def uri(self) -> str:
        if self.transport == "udp":
            return f"sip:{self.host}:{self.port}"
        return f"sip:{self.host}:{self.port};transport={self.transport}"

    def start(self, timeout_s: float = 20.0) -> Downstream:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        defines: dict[str, str | int] = {
            "WORKERS": self.workers,
            "UAS_URI": self.uas_uri,
            "CTL_PATH": str(self.ctl),
            "RPC_PATH": str(self.rpc),
        }
        listen = [f"udp:{self.host}:{self.port}"]
        if self.transport != "udp":
            listen.append(f"{self.transport}:{self.host}:{self.port}")
        if self.transport == "tcp":
            defines["WITH_TCP"] = 1
        if self.tls is not None:
            tls_config = self.run_dir / "tls.cfg"
            processes.write_tls_config(tls_config, *self.tls)
            defines["TLS_CONFIG"] = str(tls_config)
        argv = processes.kamailio_argv(DOWNSTREAM_CFG, listen, self.workers, self.run_dir, defines)
        if self.registrar:
            argv += ["-A", "WITH_REGISTRAR"]
        if self.load_counts_only:
            argv += ["-A", "CP_LOAD_COUNTS_ONLY"]
        if self.call_log:
            argv += ["-A", "WITH_CALL_LOG"]
        self.proc = processes.Process(
            f"downstream {self.name}", argv, self.run_dir / "kamailio.log"
        )
        self.proc.ensure_started(
            lambda: processes.sip_options(self.host, self.port, 0.3) == 200,
            timeout_s,
            f"downstream {self.name} to answer OPTIONS on {self.host}:{self.port}",
        )
        return self

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()

    def kill(self) -> None:
        """Die at once, as a crashed proxy does."""
        if self.proc:
            self.proc.kill()

    def set_delay_ms(self, delay_ms: int) -> None:
        kamcmd(self.ctl, "cfg.set_now_int", "cpdemo", "delay_ms", str(delay_ms))

    def set_fail_code(self, code: int) -> None:
        kamcmd(self.ctl, "cfg.set_now_int", "cpdemo", "fail_code", str(code))

    def set_load_header(self, value: str | None) -> None:
        """Make every reply that states the load (to a request that asked) carry
        ``X-CP-Load: value`` (None: the real load again)."""
        kamcmd(self.ctl, "cfg.set_now_string", "cpdemo", "load_hdr", value or "real")

    def invite_call_ids(self) -> list[str]:
        """The Call-ID of every INVITE transaction it created (retransmissions it absorbed
        are not there), with ``call_log``."""
        log = (self.run_dir / "kamailio.log").read_text(errors="replace")
        return _CALL_LOG.findall(log)

    def counts(self) -> dict[str, int]:
        """Requests received by method: invite, ack, bye, register, options, message."""
        stats = statistics(self.ctl, "core:")
        return {
            key.removeprefix("core:rcv_requests_"): value
            for key, value in stats.items()
            if key.startswith("core:rcv_requests_")
        }


def counters(ctl_socket: Path, table: str) -> dict[str, int]:
    """A node's counters in ``table``, totalled: the per-process values of ``cploc`` and
    ``cpedge`` (``"name=count ..."``, ``location.sum_counters``), or the node-wide integer of
    each name in ``cpstat``."""
    packed: dict[str, str] = {}
    totals: dict[str, int] = {}
    key = None
    for line in kamcmd(ctl_socket, "htable.dump", table).splitlines():
        line = line.strip()
        if line.startswith("name:"):
            key = line.removeprefix("name:").strip()
        elif line.startswith("value:") and key is not None:
            value = line.removeprefix("value:").strip()
            if "=" in value:
                packed[key] = value
            elif int(value):  # the config's own counters exist from the start, at 0
                totals[key] = totals.get(key, 0) + int(value)
    for name, count in location.sum_counters(packed).items():
        totals[name] = totals.get(name, 0) + count
    return totals


def start_uas(
    port: int, run_dir: Path, scenario: str = "uas.xml", ring_ms: int = 0
) -> processes.Process:
    """A SIPp UAS answering every call (sipp-scenarios/uas.xml) after ringing ``ring_ms``,
    or playing ``scenario``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        "sipp", "-sf", str(SIPP_SCENARIOS / scenario),
        "-i", "127.0.0.1", "-p", str(port), "-nostdin",
        "-max_socket", "2048", "-d", str(ring_ms),
    ]  # fmt: skip
    proc = processes.Process("sipp uas", argv, run_dir / f"uas-{port}.log", cwd=run_dir)
    proc.ensure_started(
        lambda: processes.udp_bound("127.0.0.1", port), 10.0, f"SIPp UAS on port {port}"
    )
    return proc


def start_agent(
    ds: Downstream,
    redis_url: str,
    source: list[str],
    capacity: float | None = None,
    env: dict[str, str] | None = None,
) -> processes.Process:
    """A real ``counterpoise-agent`` next to ``ds`` (its processes found by pid file), with
    ``source`` the agent's source options (``["--source", "kamailio", "--rpc", ...]``) and
    ``env`` (``COUNTERPOISE_REDIS_PASSWORD_FILE``)."""
    argv = [
        sys.executable, "-m", "counterpoise.agent", "--proxy", ds.uri,
        "--pidfile", str(ds.run_dir / "kamailio.pid"), "--redis", redis_url, *source,
    ]  # fmt: skip
    if capacity is not None:
        argv += ["--capacity", str(capacity)]
    return processes.Process(f"agent {ds.name}", argv, ds.run_dir / "agent.log", env=env)


@dataclasses.dataclass
class CallResult:
    successful: int
    failed: int
    returncode: int
    output: str


_CALL_LOG = re.compile(r"new INVITE call-id=(\S+)")
"""The line ``downstream/proxy.cfg`` logs with ``WITH_CALL_LOG`` for each INVITE transaction."""

_COUNTER = re.compile(r"^\s*(Successful call|Failed call)\s*\|\s*\d+\s*\|\s*(\d+)", re.MULTILINE)


class Caller:
    """SIPp UAC placing calls through the balancer (sipp-scenarios/uac.xml), in the background
    so a test can change the pool while calls flow."""

    def __init__(
        self,
        target: str,
        run_dir: Path,
        calls: int,
        rate: float,
        hold_ms: int = 200,
        scenario: str = "uac.xml",
        extra: tuple[str, ...] = (),
        port: int | None = None,
        local_ip: str = "127.0.0.1",
    ) -> None:
        """``ip``: the source address (another 127.x.y.z is another source on loopback)."""
        run_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or processes.free_port()
        self.log = run_dir / f"uac-{self.port}.log"
        self.error_file = run_dir / f"uac-{self.port}.err"
        argv = [
            "sipp", target, "-sf", str(SIPP_SCENARIOS / scenario),
            "-i", local_ip, "-p", str(self.port),
            "-m", str(calls), "-r", str(rate), "-d", str(hold_ms),
            "-nostdin", "-timeout", f"{int(calls / rate) + 60}s",
            "-max_socket", "2048",
            "-trace_err", "-error_file", str(self.error_file),
            *extra,
        ]  # fmt: skip
        self.proc = processes.Process("sipp uac", argv, self.log, cwd=run_dir)

    def wait(self, timeout_s: float) -> CallResult:
        try:
            self.proc.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.stop()
            raise TimeoutError(f"SIPp UAC still running after {timeout_s} s") from None
        output = self.log.read_text(errors="replace")
        counters = dict(_COUNTER.findall(output))
        return CallResult(
            successful=int(counters.get("Successful call", 0)),
            failed=int(counters.get("Failed call", 0)),
            returncode=self.proc.popen.returncode,
            output=output,
        )

    def stop(self) -> None:
        self.proc.stop()

    def error_codes(self) -> dict[int, int]:
        """How many calls ended on each unexpected final status (404, 480...), from SIPp's
        error trace."""
        codes: dict[int, int] = {}
        for status in self.error_statuses():
            code = int(status[:3])
            codes[code] = codes.get(code, 0) + 1
        return codes

    def error_statuses(self) -> list[str]:
        """The status line (code and reason) of each call ended by an unexpected final
        status, from SIPp's error trace: which of the node's 503s it was."""
        text = self.error_file.read_text(errors="replace") if self.error_file.exists() else ""
        return [status.strip() for status in _UNEXPECTED.findall(text)]


_UNEXPECTED = re.compile(
    r"Aborting call on unexpected message[^\n]*?received 'SIP/2\.0 (\d{3}[^\r\n]*)"
)
"""The line SIPp writes once per call ended by an error reply (not the "Dead call" lines of
retransmissions that arrive after it)."""


def derived_scenario(run_dir: Path, base: str, replacements: dict[str, str]) -> Path:
    """A copy of a scenario of ``sipp-scenarios/`` with keywords replaced: ``uac.xml`` with
    ``[service]`` -> ``[field0]`` calls the users of an injection file, with ``[routes]`` -> ""
    its ACK and BYE carry no route set. One source for every variant, no near-copies."""
    text = (SIPP_SCENARIOS / base).read_text()
    for old, new in replacements.items():
        if old not in text:
            raise ValueError(f"{base} has no {old!r}")
        if not new:  # a header line emptied would end the message: drop the whole line
            text = re.sub(rf"^[ \t]*{re.escape(old)}[ \t]*\n", "", text, flags=re.MULTILINE)
        text = text.replace(old, new)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / f"{Path(base).stem}-{abs(hash(tuple(replacements.items())))}.xml"
    path.write_text(text)
    return path


def users_csv(path: Path, users: list[str], expires_s: int) -> Path:
    """A SIPp injection file (register.xml, unregister.xml, calls): one user per line."""
    path.write_text("SEQUENTIAL\n" + "".join(f"{user};{expires_s}\n" for user in users))
    return path
