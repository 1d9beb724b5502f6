"""One measured stretch of load: SIPp calls through a started balancer at a set rate, the
pool's INVITE counts sampled meanwhile, events applied on time, and the balancer's CPU time
read from ``/proc`` before and after."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from harness import sipp_messages, testbed

from bench.contenders import Cluster, Running
from bench.metrics import SIPP_TRACE_ARGS, SippResult, merge_sipp, read_sipp
from bench.pool import InviteSample, Pool

SAMPLE_INTERVAL_S = 0.5
"""Period of reading the INVITE counts: 2 points per second for the share plots. Reading
the tap's counters costs nothing; the fallback (kamcmd to each proxy) a few ms."""

HOLD_MS = 2000
"""How long every call stays up after its 200 (as in the demo)."""

UAC_TIMEOUT_S = 10.0
"""uac.xml gives up on an unanswered INVITE or BYE after 10 s."""

WAIT_MARGIN_S = 30.0
"""On top of the load's duration, its calls' hold time and two UAC timeouts (INVITE, BYE):
the caller must be done by then or the run is reported as broken."""


@dataclasses.dataclass(frozen=True)
class Load:
    rate: float
    """Calls/s offered."""
    hold_ms: int = HOLD_MS
    time_rejections: bool = False
    """Trace SIPp's messages to time each error reply to an INVITE (``sipp_messages``):
    past the pool's capacity, how fast the excess heard its 503."""
    dialled_users: bool = False
    """Each call dials a user of its own (``dialled_scenario``), as a trunk's calls dial
    numbers: every location lookup misses the node's cache. Else every call dials SIPp's
    ``service`` user, whose lookups the cache answers."""


DIALLED_USER = "n[call_number]"
"""The R-URI and To user of a call of ``Load.dialled_users``: one per call."""


def dialled_scenario(run_dir: Path) -> Path:
    """uac.xml with each call dialling ``DIALLED_USER`` instead of ``[service]``, written into
    a folder of ``run_dir`` under the same name (SIPp names its statistics after it)."""
    text = (testbed.SIPP_SCENARIOS / "uac.xml").read_text()
    changed = text.replace("INVITE sip:[service]@", f"INVITE sip:{DIALLED_USER}@").replace(
        "To: <sip:[service]@", f"To: <sip:{DIALLED_USER}@"
    )
    if changed.count(DIALLED_USER) < 2:
        raise ValueError("uac.xml no longer dials [service] in its INVITE's R-URI and To")
    path = run_dir / "dialled" / "uac.xml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(changed)
    return path


@dataclasses.dataclass(frozen=True)
class Event:
    at_s: float
    """Seconds after the first call."""
    what: str
    apply: Callable[[Pool], None]


@dataclasses.dataclass
class Measurement:
    rate: float
    duration_s: float
    sipp: SippResult
    origin_epoch: float
    """Epoch seconds of the first call: time 0 of ``samples`` and of the events."""
    samples: list[InviteSample]
    cpu_s: float
    store_cpu_s: float
    machine_busy: float
    """Fraction of the machine's CPU time (both cores) that was busy during the load."""
    rejections: list[sipp_messages.Rejection] = dataclasses.field(default_factory=list)
    """The INVITEs answered with an error, each with its delay (``Load.time_rejections``)."""

    @property
    def cpu_per_call_ms(self) -> float:
        """CPU ms a call offered: the balancer's processes and its store's together."""
        return 1000 * (self.cpu_s + self.store_cpu_s) / max(1, self.sipp.attempted)


Counter = Callable[[float], InviteSample]
"""Cumulative INVITEs per proxy at the moment of the call, time since the given origin:
``InviteTap.sample`` (on the wire) or ``Pool.sample`` (the proxies' own counters)."""


class Sampler(threading.Thread):
    def __init__(self, counter: Counter, t0: float) -> None:
        super().__init__(daemon=True)
        self.counter = counter
        self.t0 = t0
        self.samples: list[InviteSample] = []
        self.done = threading.Event()

    def run(self) -> None:
        while True:
            self.samples.append(self.counter(self.t0))
            if self.done.wait(SAMPLE_INTERVAL_S):
                self.samples.append(self.counter(self.t0))
                return


def machine_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine since boot (/proc/stat)."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def measure(
    running: Running | Cluster,
    pool: Pool | None,
    counter: Counter | None,
    run_dir: Path,
    load: Load,
    duration_s: float,
    events: Sequence[Event] = (),
    say: Callable[[str], None] = print,
) -> Measurement:
    """Offer ``load`` for ``duration_s`` through ``running`` and wait for every call to end;
    apply each event at its time. Several nodes each get their own caller and an equal part
    of the load."""
    ports = running.ports
    rate = load.rate / len(ports)
    calls = max(1, round(rate * duration_s))
    cpu_before, store_before = running.cpu_seconds(), running.extra_cpu()
    busy_before, total_before = machine_cpu()
    t0 = time.monotonic()
    origin = time.time()
    sampler = Sampler(counter, t0) if counter else None
    if sampler:
        sampler.start()
    extra = SIPP_TRACE_ARGS + (sipp_messages.TRACE_ARGS if load.time_rejections else ())
    scenario = str(dialled_scenario(run_dir)) if load.dialled_users else "uac.xml"
    callers = [
        testbed.Caller(
            f"127.0.0.1:{port}", run_dir, calls, rate, load.hold_ms, scenario, extra=extra
        )
        for port in ports
    ]
    try:
        for event in sorted(events, key=lambda e: e.at_s):
            delay = t0 + event.at_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # the scenario's clock: the event is due at this time
            assert pool
            event.apply(pool)
            say(f"      t={time.monotonic() - t0:5.1f} s  {event.what}")
        limit = duration_s + load.hold_ms / 1000 + 2 * UAC_TIMEOUT_S + WAIT_MARGIN_S
        outcomes = [caller.wait(max(0.0, t0 + limit - time.monotonic())) for caller in callers]
    finally:
        for caller in callers:
            caller.stop()
        if sampler:
            sampler.done.set()
            sampler.join()
    busy_after, total_after = machine_cpu()
    for outcome in outcomes:
        if outcome.returncode not in (0, 1):
            # 0: every call succeeded, 1: some failed; anything else is SIPp itself failing.
            raise RuntimeError(f"SIPp exited {outcome.returncode}:\n{outcome.output[-2000:]}")
    return Measurement(
        rate=load.rate,
        duration_s=duration_s,
        sipp=merge_sipp([read_sipp(run_dir, caller.proc.pid) for caller in callers]),
        origin_epoch=origin,
        samples=sampler.samples if sampler else [],
        cpu_s=running.cpu_seconds() - cpu_before,
        store_cpu_s=running.extra_cpu() - store_before,
        machine_busy=(busy_after - busy_before) / max(1, total_after - total_before),
        rejections=[
            rejection
            for caller in callers
            if load.time_rejections
            for rejection in sipp_messages.rejections(sipp_messages.trace_file(caller))
        ],
    )
