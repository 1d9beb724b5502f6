"""One balancer node's edge run through the fake KSR: ``kamailio.cfg``'s request route past
its native edge checks (flood limits, Max-Forwards, sanity: tests/e2e), calling the embedding
API (``Embedded``) as that route does, with the real core, the real shared-memory glue on the
fake's hash tables and the real sync loop on an in-memory store, one fake clock for all of
them. The test plays Kamailio through ``Node``'s methods."""

from __future__ import annotations

from typing import Any

import pytest

from counterpoise import clock
from counterpoise.core import dialog_seal, location
from counterpoise.core.routing_table import RoutingEntry
from counterpoise.core.settings import Settings
from counterpoise.core.sync import SyncLoop
from counterpoise.core.tally import Tally
from counterpoise.kamailio import htables

from .ksr import FakeKsr
from .sync import FakeClock, FakeProbes, MemoryDialogKeyStore, MemoryLocationStore, MemoryStore

CALLEE = "sip:bob@example.com"


class Node:
    """One balancer node: the routing object, its sync loop and a fake clock for both."""

    def __init__(self, ksr: FakeKsr, monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
        """The location server, when ``settings`` enable it, uses ``self.locations`` (in
        memory) for its Redis."""
        from counterpoise.kamailio import counters, guard, location, shared
        from counterpoise.kamailio.embed import Embedded

        # The edge's counters are one per process; each test is a fresh node.
        monkeypatch.setattr(counters, "EDGE", counters.Counters(htables.EDGE_COUNTERS))
        for module in ("app", "dialog_events", "guard", "location", "read", "shared"):
            monkeypatch.setattr(f"counterpoise.kamailio.{module}.EDGE", counters.EDGE)
        monkeypatch.setattr(guard, "_logged", set())  # what a fresh process has logged

        self.ksr = ksr
        self.settings = settings
        self.clock = FakeClock(start_ms=1_000_000)
        monkeypatch.setattr(clock, "monotonic_ms", self.clock.monotonic_ms)
        monkeypatch.setattr(clock, "wall_ms", self.clock.wall_ms)
        self.store = MemoryStore()
        self.locations = MemoryLocationStore()
        monkeypatch.setattr(location, "_open", lambda settings, timeout_ms: self.locations)
        self.logs: list[str] = []
        self.app = Embedded(settings)
        self.balancer = self.app.counterpoise
        self.balancer.rng.seed(2)
        ksr.routes["cp_release_route"] = self.app.cp_release_route
        ksr.routes["cp_on_branch"] = self.app.cp_on_branch
        self.dialog_keys = MemoryDialogKeyStore()
        monkeypatch.setattr(
            "counterpoise.kamailio.dialog_keys.DialogKeyStore.open",
            lambda *args: self.dialog_keys,
        )
        loop = SyncLoop(
            settings=settings,
            node="lb1",
            shared=shared.SharedTable(),
            probes=FakeProbes(),
            store=self.store,
            monotonic_ms=self.clock.monotonic_ms,
            wall_ms=self.clock.wall_ms,
            log=self.logs.append,
        )
        # The first sync tick makes the timer process's objects as in Kamailio; only its
        # store is this one.
        monkeypatch.setattr(self.balancer, "_make_sync_loop", lambda: loop)
        self.shared = shared
        self._publisher = shared.SharedTable()
        """The writer of ``publish``'s tables (it remembers what it wrote, as the timer's)."""

    def sealed_route(
        self,
        proxy: str,
        caller: tuple[str, int] = ("198.51.100.7", 5060),
        call_id: str = "call-1@198.51.100.7",
        from_tag: str = "from-tag-1",
        host: str = "192.0.2.1",
    ) -> str:
        """The Route a dialog through ``proxy`` carries back to the balancer at ``host``,
        sealed with the node's current key, as its Record-Route was."""
        key = dialog_seal.signing_key(self.dialog_keys.ring()[0], self.clock.wall_ms())
        assert key is not None, "no dialog key yet: tick first"
        sealed_proxy = dialog_seal.proxy_hop(proxy)
        sealed_caller = dialog_seal.caller_hop("udp", *caller)
        assert sealed_proxy is not None and sealed_caller is not None
        seal = dialog_seal.Seal(call_id, from_tag, sealed_proxy, sealed_caller)
        params = dialog_seal.record_route_params(key.key_id, key.secret, seal)
        return f"<sip:{host};lr;ftag={from_tag}{params}>"

    def pool(self, *proxies: str, **weights: float) -> None:
        """Put ``proxies`` in the pool and publish the table (one sync tick)."""
        for uri in proxies:
            self.store.add(uri, weights.get(uri, 1.0))
        self.tick()

    def publish(self, *entries: RoutingEntry) -> None:
        """Make ``entries`` the routing table, as the sync loop would."""
        self._publisher.publish_table(entries)

    def tick(self, advance_ms: int = 0) -> None:
        self.clock.advance(advance_ms)
        assert self.app.cp_sync_tick(None) == 1

    def route(self, method: str = "INVITE", ruri: str = CALLEE, **kwargs: Any) -> None:
        self.ksr.request(method, ruri, **kwargs)
        self.request_route()

    def request_route(self) -> None:
        """``kamailio.cfg``'s request route past its native edge checks, in its order."""
        from counterpoise.kamailio.app import FALSE, LOAD_HEADER, TRUE

        ksr, cp = self.ksr.module, self.app
        ksr.textops.remove_hf(LOAD_HEADER)
        if ksr.is_CANCEL():
            if ksr.tm.t_check_trans() > 0:
                ksr.tm.t_relay()
            else:
                cp.cp_forward_orphan(None)
            return
        if ksr.siputils.has_totag() > 0:
            cp.cp_in_dialog(None)
            return
        if ksr.is_ACK():
            if ksr.tm.t_check_trans() > 0:
                ksr.tm.t_relay()
            return
        if ksr.tm.t_check_trans() == 0:  # a retransmission: tm sent its last reply again
            return
        if ksr.is_OPTIONS() and ksr.is_myself_ruri() and ksr.corex.has_ruri_user() < 0:
            ksr.sl.sl_send_reply(200, "OK")
            return
        if not self.from_pool():
            ksr.textops.remove_hf("Route")
        forms_dialog = ksr.is_method_in("IS") > 0 or ksr.is_REFER() > 0
        selected = cp.cp_seal_select(None) if forms_dialog else cp.cp_select(None)
        if selected == FALSE:
            ksr.sl.sl_send_reply(503, "No Proxy Available")
        if selected != TRUE:
            return
        invite = ksr.is_INVITE()
        if invite:
            ksr.tm.t_set_auto_inv_100(0)
        if ksr.tm.t_relay() < 0:
            cp.cp_relay_failed(None)
            ksr.sl.sl_reply_error()
            return
        if invite:
            ksr.sl.sl_send_reply(100, "Trying")

    def from_pool(self) -> bool:
        """Whether the request comes from a pool proxy, as the native route reads
        ``htables.POOL_ADDRESSES``."""
        pool, pvs = self.ksr.htables[htables.POOL_ADDRESSES.name], self.ksr.pvs
        return f"{pvs['$si']}:{pvs['$sp']}" in pool or (pvs["$pr"] != "udp" and pvs["$si"] in pool)

    def core_reply(self) -> int:
        """The core reply route, Python's form of ``route(CP_CORE_REPLY)``: 1, or -1 when
        the reply is dropped."""
        assert self.app.cp_on_core_reply(None) == 1
        return -1 if self.ksr.dropped else 1

    def release(self, advance_ms: int = 0) -> None:
        """One tick of the release timer (held requests)."""
        self.clock.advance(advance_ms)
        assert self.app.cp_release_tick(None) == 1

    def reply(self, status: int, after_ms: int = 0, branch: int | None = None, **kw: Any) -> None:
        self.clock.advance(after_ms)
        self.ksr.reply(status, branch=len(self.ksr.relays) - 1 if branch is None else branch, **kw)
        # -1 tells a native reply route to drop: KEMI's set_drop reaches none
        assert self.app.cp_on_reply(None) == (-1 if self.ksr.dropped else 1)

    def fail(self, status: int, after_ms: int = 0, **kwargs: Any) -> None:
        self.clock.advance(after_ms)
        self.ksr.failure(status, **kwargs)
        assert self.app.cp_failure(None) == 1

    @property
    def tried(self) -> list[str]:
        return [relay["duri"] for relay in self.ksr.relays]

    def inflight(self, uri: str) -> int:
        return self.shared.inflight(uri)

    def totals(self) -> dict[str, Tally]:
        """What the workers counted per proxy, as the sync loop sums it."""
        self.tick()
        return {uri: t for uri, t in self.balancer.sync.totals.items() if t != Tally()}


def edge_counters(ksr: FakeKsr) -> dict[str, int]:
    """The edge counters (``cpedge``) summed over the processes that wrote them."""
    return location.sum_counters(dict(ksr.htables[htables.EDGE_COUNTERS.name]))
