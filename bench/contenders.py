"""The contenders: Counterpoise as shipped, and Kamailio's dispatcher module with each of
its load-spreading algorithms, all started the same way, on the same pool, with the same
number of SIP workers, timers and failover (``bench/dispatcher.cfg`` says what is shared).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from harness import testbed

from bench.pool import Target
from counterpoise import assets, interpreter, processes
from counterpoise.cli import table
from counterpoise.core.settings import Settings, as_text
from counterpoise.store.client import connect
from counterpoise.store.pool import PoolStore

DISPATCHER_CFG = Path(__file__).resolve().parent / "dispatcher.cfg"
KEMI_RELAY_CFG = Path(__file__).resolve().parent / "kemi_relay.cfg"
"""The same relay as ``dispatcher.cfg`` written as a minimal Python KEMI script
(``kemi_relay.py``): what any Python KEMI balancer pays before doing anything of its own."""
PY_PICK_SCRIPT = Path(__file__).resolve().parent / "py_pick.py"
"""``dispatcher.cfg``'s relay deciding each initial request in Python (``DS_PY_SCRIPT``): the
least a design that decides in Python per call pays."""
EMBEDDED_CFG = Path(__file__).resolve().parents[1] / "docs" / "embedding" / "minimal.cfg"
"""The native config docs/embedding.md gives operators, Counterpoise embedded in it: what an
operator who copies it runs (it follows every change of the embedding API by itself)."""

BALANCER_WORKERS = 4
"""SIP worker processes of every balancer, Counterpoise's default (``counterpoise up``)."""

SHM_MB = 512
"""Shared memory of every balancer (Kamailio's ``-m``). At the default 64 MB both Counterpoise
and dispatcher ran out of it near 600 calls/s in the overhead bench (tm could not allocate
transactions: every call held 2 s keeps an INVITE and a BYE transaction, plus 5 s of wait
state): a limit of the configuration, not of the balancers, so both get 512 MB."""

READY_TIMEOUT_S = 20.0
"""A balancer has this long to start and see every proxy of the pool as usable."""

EQUAL_RWEIGHT = 50
"""Relative weight of every destination when the operator does not know the capacities: the
value the dispatcher documentation recommends with ``cc=1`` (the weight is lowered by one
per ms of estimated congestion), used for plain alg 11 too so only ``cc`` differs."""

LATENCY_PRIORITY = 30
"""Priority of every destination for alg 13, the documentation's example: the adjusted
priority falls by one for each 30 ms of estimated latency."""

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
"""Units per second of the CPU times in /proc/<pid>/stat."""


BENCH_SOURCE_LIMIT = 1_000_000
"""Requests per second one source may send the bench's balancer (``flood_requests_per_s``)."""


def session_stats(session_id: int) -> Iterator[tuple[int, list[bytes]]]:
    """Each live process of one session (a Kamailio and the workers it forked:
    ``processes.Process`` starts each in its own session): its pid and the fields of its
    /proc stat after the command (fields[0] is the state, field 3 of proc(5))."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session_id:  # field 6 of proc(5): the session
            yield int(entry.name), fields


def cpu_ticks(fields: list[bytes]) -> int:
    """User plus system CPU clock ticks (fields 14 and 15 of proc(5)) of one process's
    ``session_stats`` fields."""
    return int(fields[11]) + int(fields[12])


def group_cpu_seconds(session_id: int) -> float:
    """User plus system CPU seconds of the live processes of one session."""
    return sum(cpu_ticks(fields) for _, fields in session_stats(session_id)) / CLOCK_TICKS


@dataclasses.dataclass
class Running:
    """A started balancer."""

    port: int
    proc: processes.Process
    extra_cpu: Callable[[], float] = lambda: 0.0
    """CPU seconds of the state store it relies on (Counterpoise's Redis), reported apart."""
    store_pid: int | None = None
    """That store's process, confined with the balancer in the saturation run."""

    @property
    def ports(self) -> list[int]:
        """Where callers call it: one port, one caller."""
        return [self.port]

    def cpu_seconds(self) -> float:
        return group_cpu_seconds(self.proc.pid)

    def pids(self) -> list[int]:
        """Every process the balancer needs: its Kamailio processes and its store."""
        own = [pid for pid, _ in session_stats(self.proc.pid)]
        return own + ([self.store_pid] if self.store_pid is not None else [])

    def stop(self) -> None:
        self.proc.stop()


@dataclasses.dataclass
class Cluster:
    """Several started Counterpoise nodes on one Redis, each called by its own caller."""

    nodes: list[Running]

    @property
    def port(self) -> int:
        return self.nodes[0].port

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def cpu_seconds(self) -> float:
        return sum(node.cpu_seconds() for node in self.nodes)

    def extra_cpu(self) -> float:
        return self.nodes[0].extra_cpu()  # one Redis for all

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@dataclasses.dataclass(frozen=True)
class Contender:
    name: str
    label: str
    alg: int | None = None
    """dispatcher algorithm; None for Counterpoise."""
    attrs: Callable[[str, float, float], str] = lambda name, capacity, total: ""
    """Destination attributes from the proxy's name, its capacity and the pool's total."""
    priority: int = 0
    cfg: Path = DISPATCHER_CFG
    """Kamailio config of a dispatcher contender."""
    settings: tuple[tuple[str, object], ...] = ()
    """Counterpoise settings other than the defaults (``Settings`` field, value)."""
    tree: Path = processes.REPO
    """The source tree whose kamailio.cfg and kemi/ a Counterpoise contender runs: another
    version of Counterpoise (a git worktree of an older commit) to measure a change."""
    metrics: bool = False
    """Counterpoise with its Prometheus endpoint on (``metrics_listen``, a free port)."""
    embedded: bool = False
    """Counterpoise embedded in a native config (``EMBEDDED_CFG``), not ``up``'s own."""
    python_entries: int = 0
    """A native dispatcher contender that enters Python (``py_pick.py``) this many times per
    call: 1 for the pick of the initial request, 2 for the final reply as well."""
    memory_manager: str = ""
    """A native dispatcher contender's Kamailio allocator (``-x``); empty: Kamailio's default.
    Counterpoise's is its ``memory_manager`` setting."""
    sealed: bool = False
    """A native dispatcher contender that seals each dialog's route and checks the seal of
    each in-dialog request (``DS_SEAL``): the native floor of Counterpoise's dialog trust."""

    @property
    def native(self) -> bool:
        return self.alg is not None

    def start(
        self,
        targets: Sequence[Target],
        run_dir: Path,
        redis_url: str,
        probed: Callable[[], bool] | None = None,
    ) -> Running:
        """Start the balancer in front of ``targets`` and wait until it sees each one usable
        and, when ``probed`` is given, until ``probed()`` says every target got a probe
        from it: every contender starts a run with the same knowledge of the pool."""
        run_dir.mkdir(parents=True, exist_ok=True)
        if self.native:
            running = self._start_dispatcher(targets, run_dir)
        else:
            settings = dict(self.settings)
            if self.metrics:
                settings["metrics_listen"] = f"127.0.0.1:{processes.free_port()}"
            running = start_counterpoise(
                targets, run_dir, redis_url, settings, self.tree, self.embedded
            )
        if probed:
            running.proc.ensure_started(probed, READY_TIMEOUT_S, f"{self.name} to probe")
        return running

    def start_nodes(
        self,
        nodes: int,
        targets: Sequence[Target],
        run_dir: Path,
        redis_url: str,
        probed: Callable[[], bool] | None = None,
    ) -> Running | Cluster:
        """``start``, or ``nodes`` Counterpoise nodes on the one Redis (the pool entered once,
        by the first); each waits until it sees every proxy usable."""
        first = self.start(targets, run_dir / "node1" if nodes > 1 else run_dir, redis_url, probed)
        if nodes == 1:
            return first
        assert not self.native, "dispatcher nodes share nothing: one node is the comparison"
        started = [first]
        try:
            for index in range(2, nodes + 1):
                node_dir = run_dir / f"node{index}"
                node_dir.mkdir(parents=True, exist_ok=True)
                started.append(
                    start_counterpoise(
                        targets, node_dir, redis_url, dict(self.settings), self.tree, fresh=False
                    )
                )
        except BaseException:
            Cluster(started).stop()
            raise
        return Cluster(started)

    def dispatcher_list(self, targets: Sequence[Target]) -> str:
        total = sum(target.capacity for target in targets)
        lines = [
            f"1 {t.uri} 0 {self.priority} {self.attrs(t.name, t.capacity, total)}".rstrip()
            for t in targets
        ]
        return "\n".join(lines) + "\n"

    def _start_dispatcher(self, targets: Sequence[Target], run_dir: Path) -> Running:
        port = processes.free_port()
        ds_list = run_dir / "dispatcher.list"
        ds_list.write_text(self.dispatcher_list(targets))
        ctl = run_dir / "ctl.sock"
        defines: dict[str, str | int] = {
            "DS_LIST": str(ds_list),
            "DS_ALG": int(self.alg or 0),
            "DS_CTL": f"unixs:{ctl}",
            "DS_FR_TIMER_MS": Settings().failover.fr_timer_ms,
        }
        if self.cfg == KEMI_RELAY_CFG:
            defines["DS_KEMI_SCRIPT"] = str(KEMI_RELAY_CFG.with_suffix(".py"))
        if self.python_entries:
            defines["DS_PY_SCRIPT"] = str(PY_PICK_SCRIPT)
        argv = processes.kamailio_argv(
            self.cfg, [f"udp:127.0.0.1:{port}"], BALANCER_WORKERS, run_dir, defines
        )
        argv += ["-m", str(SHM_MB)]
        if self.alg == 10:
            argv += ["-A", "WITH_CALL_LOAD"]
        if self.python_entries > 1:
            argv += ["-A", "DS_PY_FINAL"]
        if self.sealed:
            argv += ["-A", "DS_SEAL"]
        if self.memory_manager:
            argv += ["-x", self.memory_manager]
        proc = processes.Process(f"dispatcher alg {self.alg}", argv, run_dir / "balancer.log")
        proc.ensure_started(
            lambda: dispatcher_active(ctl, len(targets)),
            READY_TIMEOUT_S,
            f"dispatcher alg {self.alg} to list every proxy active",
        )
        return Running(port, proc)


def dispatcher_active(ctl: Path, proxies: int) -> bool:
    try:
        listing = testbed.kamcmd(ctl, "dispatcher.list", timeout_s=1.0)
    except (RuntimeError, OSError):
        return False
    return listing.count("FLAGS: A") == proxies


def start_counterpoise(
    targets: Sequence[Target],
    run_dir: Path,
    redis_url: str,
    overrides: Mapping[str, object] | None = None,
    tree: Path = processes.REPO,
    embedded: bool = False,
    fresh: bool = True,
) -> Running:
    """The shipped balancer (kamailio.cfg + kemi/; ``embedded``: embedded in
    ``EMBEDDED_CFG``) with its default settings (but ``overrides``), the pool entered in
    Redis with equal base weights, as an operator who does not know the capacities would;
    ``fresh=False``: another node joining the pool already there."""
    port = processes.free_port()
    settings = _bench_settings(redis_url, port, overrides)
    if fresh:
        store = _equal_pool(targets, redis_url, settings)
    else:
        store = PoolStore(connect(redis_url, 1000), settings.redis.key_prefix)
    if embedded:
        proc = _start_embedded(settings, run_dir, port, overrides)
    else:
        proc = processes.start_balancer(
            settings,
            run_dir / "run",
            log_path=run_dir / "balancer.log",
            timeout_s=READY_TIMEOUT_S,
            repo=tree,
        )
    return _when_usable(port, proc, store, settings, len(targets))


def _start_embedded(
    settings: Settings, run_dir: Path, port: int, overrides: Mapping[str, object] | None
) -> processes.Process:
    """Kamailio on ``EMBEDDED_CFG`` with the include beside it, Counterpoise's settings in
    its environment as an operator gives them."""
    shutil.copyfile(EMBEDDED_CFG, run_dir / EMBEDDED_CFG.name)
    for include in ("counterpoise.cfg", "counterpoise-dialog.cfg"):
        shutil.copyfile(assets.path(include), run_dir / include)
    defines: dict[str, str | int] = {
        "CP_SCRIPT": str(assets.path("counterpoise_native.py")),
    }
    argv = processes.kamailio_argv(
        run_dir / EMBEDDED_CFG.name, [f"udp:127.0.0.1:{port}"], BALANCER_WORKERS, run_dir, defines
    )
    given: dict[str, object] = {
        "redis_url": settings.redis.redis_url,
        "node_id": settings.node.node_id,
    }
    given |= overrides or {}
    env = {f"COUNTERPOISE_{name.upper()}": as_text(value) for name, value in given.items()}
    return processes.Process(
        "counterpoise embedded",
        [*argv, "-m", str(SHM_MB)],
        run_dir / "balancer.log",
        env={**interpreter.environ(), **env},
    )


def _bench_settings(redis_url: str, port: int, overrides: Mapping[str, object] | None) -> Settings:
    # One SIPp sends every call from 127.0.0.1: the per-source limit is kept (its cost is part
    # of what the bench measures) but far above the bench's rates.
    return Settings.of(
        redis_url=redis_url,
        node_id=f"bench:{port}",
        listen=f"udp:127.0.0.1:{port}",
        workers=BALANCER_WORKERS,
        shm_mb=SHM_MB,
        flood_requests_per_s=BENCH_SOURCE_LIMIT,
        **(overrides or {}),
    )


def _equal_pool(targets: Sequence[Target], redis_url: str, settings: Settings) -> PoolStore:
    """A Redis holding only the pool: ``targets``, equal base weights."""
    client = connect(redis_url, 1000)
    client.flushdb()
    store = PoolStore(client, settings.redis.key_prefix)
    for target in targets:
        store.add(target.uri, 1.0)
    return store


def _when_usable(
    port: int, proc: processes.Process, store: PoolStore, settings: Settings, proxies: int
) -> Running:
    """``proc`` once its node sees every proxy usable; its Redis's CPU measured beside it."""

    def all_usable() -> bool:
        rows = table.pool_rows(store, settings, int(time.time() * 1000))
        return len(rows) == proxies and all(row["state"] in ("up", "slowstart") for row in rows)

    proc.ensure_started(all_usable, READY_TIMEOUT_S, "Counterpoise to see every proxy up")
    redis_pid = int(store.client.info("server")["process_id"])
    return Running(port, proc, lambda: group_cpu_seconds(redis_pid), redis_pid)


def _rweight(value: int) -> Callable[[str, float, float], str]:
    return lambda name, capacity, total: f"rweight={value}"


def _oracle(name: str, capacity: float, total: float) -> str:
    """Relative weights proportional to the true capacities (1..100, as rweight requires)."""
    return f"rweight={max(1, round(100 * capacity / total))}"


CONTENDERS = (
    Contender("counterpoise", "Counterpoise"),
    Contender("ds4", "dispatcher alg 4 (round robin)", 4),
    Contender("ds9", "dispatcher alg 9 (weights, equal)", 9, lambda n, c, t: "weight=33"),
    Contender("ds10", "dispatcher alg 10 (call load)", 10, lambda n, c, t: f"duid={n}"),
    Contender("ds11", "dispatcher alg 11 (rweight, equal)", 11, _rweight(EQUAL_RWEIGHT)),
    Contender(
        "ds11cc",
        "dispatcher alg 11 + cc=1 (latency congestion)",
        11,
        lambda n, c, t: f"rweight={EQUAL_RWEIGHT};weight={EQUAL_RWEIGHT};cc=1",
    ),
    Contender("ds13", "dispatcher alg 13 (latency optimised)", 13, priority=LATENCY_PRIORITY),
    Contender("oracle", "oracle: alg 11, rweight = true capacities", 11, _oracle),
)
"""Every contender, in the order of the report. ``oracle`` is a reference no operator has."""

OVERHEAD_ONLY = (
    Contender("kemi4", "minimal Python KEMI relay, dispatcher alg 4", 4, cfg=KEMI_RELAY_CFG),
    Contender("py1", "native relay, alg 4 picked in Python (1 entry a call)", 4, python_entries=1),
    Contender(
        "py2",
        "native relay, alg 4 picked in Python, final reply too (2 entries)",
        4,
        python_entries=2,
    ),
    Contender("seal4", "native relay, alg 4, dialogs sealed (2 signatures a call)", 4, sealed=True),
    Contender(
        "seal-py2",
        "native relay, dialogs sealed, alg 4 picked in Python, final reply too",
        4,
        python_entries=2,
        sealed=True,
    ),
    Contender("ds4-tlsf", "dispatcher alg 4, Kamailio's tlsf allocator", 4, memory_manager="tlsf"),
    Contender(
        "seal4-tlsf",
        "native relay, alg 4, dialogs sealed, Kamailio's tlsf allocator",
        4,
        sealed=True,
        memory_manager="tlsf",
    ),
    Contender(
        "seal-py2-tlsf",
        "native relay, dialogs sealed, alg 4 picked in Python, final reply too, tlsf",
        4,
        python_entries=2,
        sealed=True,
        memory_manager="tlsf",
    ),
    Contender(
        "cp-qm",
        "Counterpoise on Kamailio's default allocator, qm",
        settings=(("memory_manager", "qm"),),
    ),
    Contender(
        "cp-nodlg",
        "Counterpoise, location server on, dialog records off",
        settings=(("dialog_record_ttl_ms", 0),),
    ),
    Contender(
        "cp-noloc", "Counterpoise, location server off", settings=(("location_server", False),)
    ),
    Contender(
        "cp-nocache",
        "Counterpoise, location lookups not cached",
        settings=(("location_cache_ms", 0),),
    ),
    Contender("cp-metrics", "Counterpoise, metrics endpoint on (not scraped)", metrics=True),
    Contender("cp-native", "Counterpoise embedded in a native config", embedded=True),
)
"""Contenders of the overhead bench only: the Python KEMI floor, the floors of a native relay
that enters Python once or twice a call, Counterpoise without its dialog records (its
lookups only), without its location server, without its lookup cache, with its metrics
endpoint on, and embedded in a native config (its KEMI form is ``counterpoise``: ``up``'s
own config is a KEMI user of the same ``Balancer``)."""


def other_version(name: str, tree: Path) -> tuple[Contender, Contender]:
    """Counterpoise from another source tree, location server on and off (``--compare``)."""
    label = f"Counterpoise from {tree}"
    return (
        Contender(name, label, tree=tree),
        Contender(
            f"{name}-noloc",
            f"{label}, location server off",
            settings=(("location_server", False),),
            tree=tree,
        ),
    )


BY_NAME = {contender.name: contender for contender in (*CONTENDERS, *OVERHEAD_ONLY)}


def add_compare_option(parser: argparse.ArgumentParser) -> None:
    """``--compare NAME=TREE``, repeated, for ``compared``."""
    parser.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="NAME=TREE",
        help="also Counterpoise from source tree TREE (e.g. a git worktree of an older commit) "
        "as contenders NAME and NAME-noloc",
    )


def compared(compare: Sequence[str]) -> list[Contender]:
    """The contenders of ``--compare`` values, each ``NAME=TREE``, added to ``BY_NAME``."""
    added = []
    for name, _, tree in (text.partition("=") for text in compare):
        for contender in other_version(name, Path(tree).resolve()):
            BY_NAME[contender.name] = contender
            added.append(contender)
    return added
