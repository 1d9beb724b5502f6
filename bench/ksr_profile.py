"""Inside Kamailio, bench only: the per-message profile of ``bench/per_message.py``.

``install`` puts a counting stand-in for the ``KSR`` module in ``sys.modules`` before
Counterpoise is imported, so every ``KSR.x.y(...)`` of the balancer is counted by kind;
``Profiled`` wraps the object whose methods the config's ``python_exec`` calls and times each
hook (the process's CPU time, ``thread_time_ns``, and the wall clock), filed under the message
being handled
("INVITE", "180 INVITE", "200 BYE"...). Each process writes its totals to
``<out>/<pid>.json`` at most every ``DUMP_EVERY_NS``, after a hook, outside the timed part.
The shipped entry script imports none of this: production pays nothing.
"""

from __future__ import annotations

import cProfile
import json
import os
import sys
import time
import types
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

DUMP_EVERY_NS = 200_000_000
"""A worker's file is at most this old after its last message (totals per message are
consistent in any one file: a message is filed whole, after its hook)."""

HTABLE_READS = frozenset({"sht_get", "sht_is_null", "sht_iterator_start", "sht_iterator_next"})
HTABLE_WRITES = frozenset({"sht_sets", "sht_seti", "sht_inc", "sht_dec", "sht_setxi", "sht_rm"})
FIRST_HOOKS = frozenset(
    {"cp_seal_select", "cp_select", "cp_in_dialog", "cp_forward_orphan", "cp_on_core_reply"}
)
"""Each request that enters Python for a decision enters one of these once (an INVITE
``cp_seal_select``, or ``cp_seal`` then ``cp_select``), each reply a KEMI config's core reply
route: their entries count the messages."""
REPLY_HOOKS = frozenset({"cp_on_core_reply", "cp_on_reply"})
RESUMED = "(held, resumed)"
RESUMED_HOOKS = frozenset({"cp_release_route"})
"""A held request resumed by the release tick (``t_continue``): filed as its own message
("INVITE (held, resumed)")."""
TIMER_HOOKS = {
    "cp_sync_tick": "timer: sync tick",
    "cp_release_next": "timer: release tick",
    "cp_uac_reply": "probe reply",
    "cp_failure": "failure route",
}

Counts = defaultdict[str, defaultdict[str, int]]


class Recorder:
    """One process's totals, per message kind: ``messages``, ``entries`` (hooks entered),
    ``cpu_ns`` and ``wall_ns`` (outermost hooks), one count per kind of KSR call and per
    function (``KSR.tm.t_relay``), and the wall time inside KSR calls (``ksr_wall_ns``, and
    per function: ``ns KSR.tm.t_relay``)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.counts: Counts = defaultdict(lambda: defaultdict(int))
        self.current = "other"
        self.depth = 0
        self._dumped_ns = 0
        self.profiler: cProfile.Profile | None = None
        """With ``install(..., python_profile=True)``: every hook under cProfile (its own
        run: the profiler's cost would swamp the timings)."""

    def add(self, what: str, n: int = 1) -> None:
        self.counts[self.current][what] += n

    def dump_if_due(self, now_ns: int) -> None:
        if now_ns - self._dumped_ns < DUMP_EVERY_NS:
            return
        self._dumped_ns = now_ns
        path = self.out / f"{os.getpid()}.json"
        partial = path.with_suffix(".part")
        partial.write_text(json.dumps(self.counts))
        partial.replace(path)
        if self.profiler is not None:
            self.profiler.dump_stats(self.out / f"{os.getpid()}.prof")


def _pv_kind(name: str, args: tuple[object, ...]) -> str:
    spec = args[0] if args and isinstance(args[0], str) else ""
    if spec.startswith("$avp("):
        return "avp_read" if name in ("get", "gete", "is_null") else "avp_write"
    return "pv_read" if name in ("get", "gete", "is_null") else "pv_write"


def _kind(module: str, name: str, args: tuple[object, ...]) -> str:
    if module == "htable":
        if name in HTABLE_READS:
            return "htable_read"
        return "htable_write" if name in HTABLE_WRITES else "htable_other"
    if module == "pv":
        return _pv_kind(name, args)
    return "ksr_other"


class CountingModule(types.ModuleType):
    """Stands for ``KSR`` (or one of its submodules): each function counted, then called."""

    def __init__(self, real: types.ModuleType, recorder: Recorder, path: str = "") -> None:
        super().__init__(real.__name__)
        self._real = real
        self._recorder = recorder
        self._path = path

    def __getattr__(self, name: str) -> object:
        found = getattr(self._real, name)
        if isinstance(found, types.ModuleType):
            wrapped: object = CountingModule(found, self._recorder, name)
        elif callable(found):
            wrapped = self._counted(found, name)
        else:
            return found
        setattr(self, name, wrapped)  # the next lookup finds it without __getattr__
        return wrapped

    def _counted(self, function: Callable[..., object], name: str) -> Callable[..., object]:
        recorder, module = self._recorder, self._path
        full_name = f"KSR.{module}.{name}" if module else f"KSR.{name}"

        def counted(*args: object) -> object:
            recorder.add(_kind(module, name, args))
            recorder.add("ksr_calls")
            detail = f" {args[0]}" if module in ("pv", "htable") and args else ""
            recorder.add(full_name + detail)
            started_ns = time.perf_counter_ns()
            try:
                return function(*args)
            finally:
                elapsed_ns = time.perf_counter_ns() - started_ns
                recorder.add("ksr_wall_ns", elapsed_ns)
                recorder.add("ns " + full_name, elapsed_ns)

        return counted


def count_codecs(recorder: Recorder) -> None:
    """Count the decodes and encodes of shared-memory values (routing table, runtime
    settings, tallies, route-time histograms, cached location holders)."""
    from counterpoise.core import location, routing_table
    from counterpoise.core.tally import Tally
    from counterpoise.kamailio import shared
    from counterpoise.monitoring.histogram import Histogram

    def counted(function: Callable[..., object], what: str) -> Callable[..., object]:
        def call(*args: object, **kwargs: object) -> object:
            recorder.add(what)
            return function(*args, **kwargs)

        return call

    routing_table.decode = counted(routing_table.decode, "decode")  # type: ignore[assignment]
    json_loads = counted(json.loads, "decode")
    shared.json = types.SimpleNamespace(loads=json_loads)  # type: ignore[assignment]
    for cls in (Tally, Histogram, location.CachedHolder):
        cls.encode = counted(cls.encode, "encode")  # type: ignore[method-assign]
    holder = location.CachedHolder
    decode = holder.decode
    holder.decode = staticmethod(counted(decode, "decode"))  # type: ignore[method-assign,assignment]


def install(out: Path, counting: bool, python_profile: bool = False) -> Recorder:
    """Before Counterpoise is imported: the recorder, and when ``counting`` the counting
    ``KSR`` in ``sys.modules`` (without it only hooks are timed, at no cost per call)."""
    import KSR

    out.mkdir(parents=True, exist_ok=True)
    recorder = Recorder(out)
    if python_profile:
        recorder.profiler = cProfile.Profile()
    if counting:
        sys.modules["KSR"] = CountingModule(KSR, recorder)
    return recorder


def _message_kind(hook: str, real_ksr: types.ModuleType) -> str:
    if hook in TIMER_HOOKS:
        return TIMER_HOOKS[hook]
    method = real_ksr.pv.get("$rm")
    if hook in RESUMED_HOOKS:
        return f"{method} {RESUMED}"
    if hook in REPLY_HOOKS:
        return f"{real_ksr.pv.get('$rs')} {method}"
    return str(method)


class Profiled:
    """The object the config's ``python_exec`` calls: each ``cp_*`` hook of ``app`` timed and
    filed."""

    def __init__(self, app: object, recorder: Recorder) -> None:
        import KSR

        self._app = app
        self._recorder = recorder
        self._ksr = getattr(KSR, "_real", KSR)

    def __getattr__(self, name: str) -> object:
        found = getattr(self._app, name)
        if not name.startswith("cp_") or not callable(found):
            return found
        timed = self._timed(found, name)
        setattr(self, name, timed)
        return timed

    def _timed(self, hook: Callable[..., int], name: str) -> Callable[..., int]:
        recorder, ksr = self._recorder, self._ksr

        def timed(*args: object) -> int:
            outer = recorder.depth == 0
            own = outer or name in RESUMED_HOOKS
            enclosing = recorder.current
            if own:
                recorder.current = _message_kind(name, ksr)
                if name in FIRST_HOOKS or name in TIMER_HOOKS or name in RESUMED_HOOKS:
                    recorder.add("messages")
            recorder.add("entries")
            recorder.depth += 1
            started_ns, started_cpu_ns = time.perf_counter_ns(), time.thread_time_ns()
            if outer and recorder.profiler is not None:
                recorder.profiler.enable()
            try:
                return hook(*args)
            finally:
                if outer and recorder.profiler is not None:
                    recorder.profiler.disable()
                cpu_ns = time.thread_time_ns() - started_cpu_ns
                wall_ns = time.perf_counter_ns() - started_ns
                recorder.depth -= 1
                if own:
                    recorder.add("cpu_ns", cpu_ns)
                    recorder.add("wall_ns", wall_ns)
                    recorder.current = "other" if outer else enclosing
                if own and not outer:  # the enclosing hook's time includes it: not twice
                    for what in ("cpu_ns", "wall_ns", "ksr_wall_ns"):
                        recorder.add(what, -(cpu_ns if what == "cpu_ns" else wall_ns))
                if outer:
                    recorder.dump_if_due(time.perf_counter_ns())

        return timed
