"""The Python of one call's two hooks, timed outside Kamailio (``python -m bench.hooks_cold``).

``cp_seal_select`` on the INVITE and ``cp_on_reply`` on its 200, as the native embedding calls
them, on one balancer node driven through the fake ``KSR`` of the unit tests
(``tests/fakes``: the real core, shared-memory glue and sync loop; the call of
``tests/unit/test_ksr_calls.py``). Each hook is timed in the process's CPU time, hot (run
after run) and cold: a Kamailio worker takes a message after the other processes had the
cores, so its caches hold none of the hook's code and data, which the cold run reproduces by
streaming a buffer larger than the caches through them before each hook. The fake's own
work is in both figures and is the same for every tree, so the figures compare trees (run it
with ``--tree`` on a checkout of another commit), not the per-message bench's absolute
costs. Nothing here is imported by Counterpoise.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

EVICT_BYTES = 32 * 1024 * 1024
"""More than the last-level cache of the machines the benches run on."""
WARM_CALLS = 300
CALLS = 1500
PROXY = "sip:10.0.0.1:5060"
PROXY_ADDRESS = ("10.0.0.1", 5060)
LOAD = "tx=1;workers=4;active=1"


def _node(tree: Path, location_server: bool) -> Callable[[int, bool], tuple[int, int]]:
    """One call through the hooks of the Counterpoise in ``tree``: its hooks' CPU ns."""
    sys.path[:0] = [str(tree / "kemi"), str(tree)]
    import pytest
    from tests.fakes import native
    from tests.fakes.edge import CALLEE, Node
    from tests.fakes.ksr import FakeKsr

    from counterpoise.core.settings import Settings

    patch = pytest.MonkeyPatch()
    ksr = FakeKsr()
    ksr.install(patch)
    from counterpoise.kamailio.embed import Embedded

    settings = Settings.of(location_server=location_server)
    node = Node(ksr, patch, settings)
    node.pool(PROXY)
    hooks = Embedded(settings, native=True)
    ksr.routes["CP_BRANCH"] = lambda msg: native.seal(ksr)
    evicted = bytearray(EVICT_BYTES)

    def call(n: int, cold: bool) -> tuple[int, int]:
        ksr.request("INVITE", CALLEE, call_id=f"call-{n}@198.51.100.7")
        if cold:
            bytes(evicted)
        started_ns = time.thread_time_ns()
        assert hooks.cp_seal_select(None) == 1
        invite_ns = time.thread_time_ns() - started_ns
        ksr.module.tm.t_relay()
        ksr.avps["cpl0"] = [LOAD]  # route[CP_PROVISIONAL]'s book of the 100 Trying
        ksr.avps["cpq0"] = [2]
        node.clock.advance(1)
        ksr.reply(200, source=PROXY_ADDRESS, headers={"X-CP-Load": LOAD})
        ksr.calls.clear()
        if cold:
            bytes(evicted)
        started_ns = time.thread_time_ns()
        assert hooks.cp_on_reply(None) == 1
        return invite_ns, time.thread_time_ns() - started_ns

    return call


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hooks_cold", description=__doc__)
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--location-off", action="store_true")
    args = parser.parse_args(argv)
    call = _node(args.tree.resolve(), not args.location_off)
    for n in range(WARM_CALLS):
        call(n, False)
    for cold in (False, True):
        times = [call(WARM_CALLS + n + cold * CALLS, cold) for n in range(CALLS)]
        invite_us = statistics.median(t[0] for t in times) / 1000
        reply_us = statistics.median(t[1] for t in times) / 1000
        print(f"{'cold' if cold else 'hot'}: INVITE {invite_us:.1f} µs, 200 {reply_us:.1f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
