"""Counterpoise inside Kamailio: the ``Balancer``, every balancing decision, one object per
process, which the embedding API (``embed.Embedded``) calls from a config's routes: the
turnkey ``kamailio.cfg``'s, or an operator's own.

Thin glue over the core: SIP mechanics here, decisions in ``core`` (``attempts`` for
failover and timing, ``selection`` for the choice, ``location`` for the holder). Kamailio's
conventions hold: a ``Balancer`` operation returns what a module function returns in a
native config (1 true, -1 false, 0 stop: the request was
answered or held here), so a native ``python_exec`` passes it on unchanged. Per-transaction
data lives in AVPs (``avps``), because a reply may be handled by another worker than its
request. docs/embedding.md documents each operation.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import random
from collections.abc import Callable

import KSR

from counterpoise import clock
from counterpoise.core import (
    admission,
    attempts,
    dialog_seal,
    edge,
    hold,
    location,
    reports,
    stray,
)
from counterpoise.core.policy.health import probe_timeout_counts
from counterpoise.core.selection import WeightedPicker
from counterpoise.core.settings import SettingError, Settings, with_runtime
from counterpoise.core.spread import GoldenSpread
from counterpoise.core.sync import SyncLoop
from counterpoise.kamailio import (
    avps,
    dialog_keys,
    guard,
    holding,
    htables,
    metrics,
    node_load,
    probes,
    read,
    shared,
)
from counterpoise.kamailio.counters import EDGE
from counterpoise.kamailio.dialog_events import DialogEvents, QueuedReplies
from counterpoise.kamailio.guard import hook
from counterpoise.kamailio.location import DialogWriteBehind, LocationRouting
from counterpoise.kamailio.native_dialog import NativeDialogTable
from counterpoise.kamailio.view import NodeViewTable
from counterpoise.store.client import redact
from counterpoise.store.pool import PoolStore

LOAD_HEADER = "X-CP-Load"
"""Hop by hop: only a pool proxy's reply to the balancer may carry it (docs/security.md)."""
LOAD_REQUEST = f"{reports.LOAD_REQUEST_HEADER}: 1\r\n"
"""Added to every request relayed: the proxy states its load only to a request that asks."""

IN_DIALOG_ROUTE = "CP_IN_DIALOG"
"""The config's route (``embed/counterpoise-dialog.cfg``) that relays or refuses an in-dialog
request by its sealed Route, and returns -1 for what it leaves to ``in_dialog``."""
SEAL_ROUTE = "CP_SEAL"
"""The config's route that seals a branch's Record-Route and signs its Via."""
ADMITTED = "$var(cp_admitted)"
"""1 once ``IN_DIALOG_ROUTE`` relayed the request it ended, 0 when it refused it."""

PROXY_AT_SOURCE = f"$sht({htables.PROXY_BY_ADDRESS.name}=>$si $sp)"
"""The pool proxy known at the message's source address and port, if any."""

SHED_REASON = "Over Capacity"
"""Reason phrase of the 503 a shed request gets (``core.admission``)."""

SEALED_FORMS_MEMO = 256
"""Pool proxies whose sealed form a process remembers: a pool's few, and those it had before
a change (a form depends on the URI alone)."""

TRUE, FALSE, STOP = 1, -1, 0
"""What an operation returns, as a module function does in a native config: ``STOP`` (the
request was answered or held here) ends the native route that called it."""


@dataclasses.dataclass(frozen=True)
class RouteNames:
    """What ``Balancer`` arms on a request it routes: in a KEMI config, methods of the
    operator's KEMI object; in a native one, route blocks (``onreply_route[NAME]``...)."""

    reply: str
    """tm onreply route, calling ``Balancer.on_reply``."""
    failure: str
    """tm failure route, calling ``Balancer.failover`` (and relaying when it says so)."""
    release: str
    """Route a held request resumes in (``tmx.t_continue``), calling ``release_route``."""
    branch: str
    """tm branch route of the requests ``seal`` marked, calling ``on_branch`` (the
    balancer's sealed Record-Route)."""
    times_provisional: bool = False
    """The reply route times the proxy's provisional replies itself and counts its 2xx
    (its outcome and dialog record queued for the timer process), and calls ``on_reply``
    for the rest (the native include's): each attempt then carries what it needs (its relay
    on the script clock, the timers to re-arm)."""
    in_dialog_judged: bool = False
    """Whether the config runs ``IN_DIALOG_ROUTE`` itself before ``in_dialog`` (a native
    one): ``in_dialog`` then gets only what that route left to Python, and does not run it
    again (it would hand the request back to Python)."""


class Balancer:
    """The balancing of one Kamailio process: the worker's view of the pool, the sync loop
    (in the timer process), the location server's lookups, the hold queue and the metrics.
    Made in ``mod_init`` (before Kamailio forks); ``child_init`` makes it per process."""

    def __init__(self, settings: Settings, routes: RouteNames) -> None:
        self.settings = settings
        self.routes = routes
        # mod_init runs before Kamailio forks: per-process state is made in child_init.
        self.view = shared.WorkerView()
        self.keys = dialog_keys.WorkerKeys()
        self.settings_feed = shared.SettingsFeed()
        self._settings_seen: object = object()
        """The published version at which this process last looked at the settings and its
        dialog keys followed."""
        self.rng = random.Random()
        self.spread = GoldenSpread(0.0)
        self.sync: SyncLoop | None = None
        self._max_sample_ms = int(settings.latency.failure_penalty_ms)
        self.location: LocationRouting | None = None
        self.dialog_writes: DialogWriteBehind | None = None
        self.dialog_events: DialogEvents | None = None
        self.dialog_keys: dialog_keys.DialogKeyLoader | None = None
        self.node_load: node_load.NodeLoad | None = None
        self.native_dialog = NativeDialogTable()
        self.metrics: metrics.Endpoint | None = None
        self.node_view = NodeViewTable()
        self.waiting = holding.Waiting()
        # Timing each routed request is part of the metrics: off with the endpoint.
        self.route_timer = metrics.RouteTimer() if settings.node.metrics_listen else None
        if settings.location.location_server:
            self.location = LocationRouting(settings, _notice)

    def child_init(self, rank: int) -> int:
        self.view = shared.WorkerView()
        self.keys = dialog_keys.WorkerKeys()
        self._settings_seen = object()  # this process's view and keys follow from scratch
        self.rng.seed(os.getpid() ^ clock.monotonic_ns())
        self.spread = GoldenSpread(self.rng.random())  # each worker from its own point
        return 0

    def refresh(self) -> WeightedPicker:
        """Take what the timer process published since the last look (routing table, shed
        share, dialog keys, runtime settings): what every request-route operation does first
        (``trusted`` needs it too). One shared-memory read when nothing moved."""
        picker = self.view.refresh()
        version = self.view.version
        if version != self._settings_seen:
            self._settings_seen = version
            self.keys.follow(version)
            self.follow_settings()
        return picker

    def trusted(self, source: edge.Address | None = None, stream: bool | None = None) -> bool:
        """Whether the request being handled comes from a pool proxy (its address and
        transport): such requests pass the edge checks an operator keeps for strangers.
        ``source`` and ``stream``: as the caller read them already (else read here)."""
        source = _source() if source is None else source
        stream = _stream() if stream is None else stream
        return edge.from_pool(source, stream, self.view.pool)

    @hook("core_reply")
    def on_core_reply(self) -> int:
        """Every reply the node receives, before tm matches it: a proxy's reply that is not a
        failure, however late, is a sign of life (``policy``: overload is not death); the
        load header never leaves. A reply that matches no transaction is dropped (stateless
        forwarding to its next Via would reflect it), unless a pool proxy sends it: then it
        answers a request the other node of a pair relayed before it died (the floating
        address moved here), and Kamailio forwards it by its next Via, so the call in set-up
        completes (the 200's retransmissions) or ends (a final error); but only when the
        signature in the balancer's Via proves that next Via is the one that request came
        from (``core.stray``): a proxy bouncing a callee's forged reply reflects nothing."""
        try:
            now_ms = clock.monotonic_ms()
            status = None if self.view.hears_nothing_new(now_ms) else read.number("$rs")
            if status is not None and not attempts.is_proxy_failure(status):
                host, port = _source()
                self.view.note_heard(f"sip:{host}:{port}", now_ms)
            KSR.textops.remove_hf(LOAD_HEADER)  # tm's routes still read it: removal is a lump
        finally:  # whatever failed above, a stray reply goes on only when proven
            if KSR.tm.t_check_trans() < 0 and self.stray_reply() == FALSE:
                KSR.set_drop()
        return TRUE

    def stray_reply(self) -> int:
        """A reply that matches no transaction (``on_core_reply`` says why it is dropped
        unless proven): ``TRUE`` when Kamailio is to forward it by its next Via (counted as
        ``stray_forwarded``), else ``FALSE`` (counted as ``stray_reply``) for the caller to
        drop it. Only when a pool proxy sent it and it proves where its request came from;
        a failure of that check, whatever it is, is no proof: it fails closed."""
        try:
            self.refresh()  # the pool as of now: a standby may have routed nothing yet
            forwarded = self.trusted() and _stray_reply_verifies(self.keys.secret)
        except Exception as error:  # caught broadly: an unproven reply is dropped
            guard.failed("stray reply", error)
            forwarded = False
        EDGE.count("stray_forwarded" if forwarded else "stray_reply")
        if forwarded:  # proven: a failure to pass it on stops no forwarding
            guard.isolated("stray reply to peers", self._pass_to_peers)
        return TRUE if forwarded else FALSE

    def _pass_to_peers(self) -> None:
        """Send the reply being forwarded to each node of ``peers`` too: the request may be
        a live peer's, the floating address having moved here while it waited, and that
        peer's transaction then has its answer and does not retry on another proxy. A peer
        without the transaction drops it (its source is no pool proxy: unproven)."""
        peers = self.settings.node.peer_sockets()
        message = read.text("$mb") if peers else None
        if message is None:  # no peer, or bytes the interpreter cannot take as text
            return
        for peer in peers:
            KSR.corex.send_data(peer.uri(), message)

    def _from_peer(self) -> bool:
        """Whether the message being handled came from one of ``peers`` (a node sends from its
        first socket, its own), by the rule that tells a pool proxy's (``edge.from_pool``)."""
        peers = frozenset(
            edge.hop(peer.host, peer.port) for peer in self.settings.node.peer_sockets()
        )
        return edge.from_pool(_source(), _stream(), peers)

    @hook("orphan", fallback=STOP)
    def forward_orphan(self) -> int:
        """A CANCEL, or the ACK of an error reply, that matches no transaction of this node,
        from outside the pool: its INVITE may have been relayed by the other node of a pair,
        which died (the floating address moved here). Kamailio forwards a request statelessly
        with the very Via branch its tm gave that INVITE's first branch (both hash the same
        fields of the caller's request, and both nodes advertise the floating address), so
        it goes to every proxy of the pool and the one that holds the INVITE matches it (the
        others have no such transaction). A CANCEL is answered 200 here, as a stateful proxy
        answers the CANCELs it takes (RFC 3261 16.10); the proxies' answers to it come back
        to this node, match nothing and are dropped (``stray_reply``). Counted as
        ``orphan_forwarded``; always ``STOP``."""
        self.refresh()
        return self.ksr_route_orphan(_source(), _stream())

    @hook("orphan", fallback=STOP)
    def ksr_route_orphan(self, source: edge.Address, stream: bool) -> int:
        """``forward_orphan`` in a request route that took the settings and table on entry
        and read the request's source already (``ksr_route_withindlg``)."""
        if self.trusted(source, stream) or not self.view.hops:
            EDGE.count("relay_denied")
            return STOP
        if KSR.is_CANCEL():
            KSR.sl.sl_send_reply(200, "OK")
        for uri in self.view.hops:
            KSR.forward_uri(uri)
        EDGE.count("orphan_forwarded")
        return STOP

    # --- requests ----------------------------------------------------------------------------

    @hook("in_dialog")
    def in_dialog(self) -> int:
        """An in-dialog request (it has a To tag): relayed by its Record-Route set or its
        dialog record, or answered; always ``STOP``."""
        self.refresh()
        self.ksr_route_withindlg(_source(), _stream())
        return STOP

    def ksr_route_withindlg(self, source: edge.Address, stream: bool) -> None:
        """In-dialog requests pass only in a dialog the balancer made: its top Route is the
        balancer's, sealed (``core.dialog_seal``), and the request goes where the seal says;
        without a route set, from outside the pool, by its dialog record (location server); an
        ACK matching no transaction, without either, as an orphan (``forward_orphan``).
        Anything else: 403 (an ACK is dropped), counted, nothing relayed. The config's own
        route ``IN_DIALOG_ROUTE`` judges a sealed Route with no Python; a seal made before
        it (``dialog_seal.SEAL_PARAM_V1``) is checked here."""
        ack = KSR.is_ACK()
        if self.location is not None and ack:  # the dialog's record goes to Redis
            self.location.dialog_confirmed(read.dialog_ids(), source[0])
        matched = KSR.tm.t_check_trans() if ack else 1
        if matched == 0:
            return  # the ACK of a negative reply: tm absorbed it
        if not self.routes.in_dialog_judged and KSR.route(IN_DIALOG_ROUTE) == 0:  # judged
            if self.location is not None and not ack and KSR.is_BYE() and _admitted():
                self.location.dialog_ended(read.dialog_ids())
            return
        ids = read.dialog_ids()
        if KSR.hdr.is_present("Route") > 0:
            hop = self._sealed_hop(source, stream, ids)
            if hop is None or KSR.rr.loose_route() < 0:
                self._refuse_route(ack)
                return
            if self.location is not None and not ack and KSR.is_BYE():
                self.location.dialog_ended(ids)
            self._relay_in_dialog(hop.uri(), metrics.node.IN_DIALOG_RECORD_ROUTE)
            return
        if edge.from_pool(source, stream, self.view.pool):
            self._deny_in_dialog(ack, 404, "Not here")
        elif not self.ksr_route_dialog_record():  # no route set, no dialog record
            if matched < 0:  # an error reply's ACK, its INVITE's transaction another node's
                self.ksr_route_orphan(source, stream)
            else:
                self._deny_in_dialog(ack, 404, "Not here")

    def _sealed_hop(
        self, source: edge.Address, stream: bool, ids: read.DialogIds
    ) -> dialog_seal.Hop | None:
        """Where the seal of the top Route sends this request; None when it may go nowhere."""
        route, (call_id, from_tag, to_tag) = read.text("$route_uri"), ids
        if route is None or call_id is None:
            return None
        request = dialog_seal.Request(route, call_id, from_tag, to_tag, source, stream)
        return dialog_seal.admit(request, self.keys.secret, self.view.pool, self._addresses)

    def _addresses(self, proxy: dialog_seal.Hop) -> frozenset[edge.Address]:
        """Where the pool proxy a seal names may be seen (its name resolved)."""
        for uri, addresses in self.view.hops.items():
            if dialog_seal.proxy_hop(uri) == proxy:
                return addresses
        return frozenset()

    def _refuse_route(self, ack: bool) -> None:
        """A Route the node cannot pass: 403, or 503 before it first read the key ring (no seal
        can be checked yet, and a later request may pass), as the config's CP_DENY answers."""
        if self.keys.signing() is None:
            self._deny_in_dialog(ack, 503, "Dialog Keys Not Loaded")
        else:
            self._deny_in_dialog(ack)

    def _deny_in_dialog(self, ack: bool, status: int = 403, reason: str = "Forbidden") -> None:
        EDGE.count("relay_denied")
        if not ack:
            KSR.sl.sl_send_reply(status, reason)

    def _relay_in_dialog(self, destination: str, counter: str) -> bool:
        """Send an in-dialog request to ``destination`` (``$du``); False if tm could not."""
        KSR.setdsturi(destination)
        KSR.tm.t_set_fr(0, self.settings.failover.in_dialog_fr_timer_ms)
        if KSR.tm.t_relay() < 0:
            return False
        metrics.count(counter)
        return True

    def ksr_route_dialog_record(self) -> bool:
        """Relay an in-dialog request to the proxy its dialog record names, with that proxy
        as the Route so the proxy's own loose_route takes it; False when there is none."""
        proxy = self.location.route_dialog() if self.location is not None else None
        if proxy is None or proxy not in self.view.hops:
            return False
        KSR.hdr.insert(f"Route: <{proxy};lr>\r\n")
        relayed = self._relay_in_dialog(proxy, metrics.node.IN_DIALOG_DIALOG_RECORD)
        if not relayed and not KSR.is_ACK():
            KSR.sl.sl_reply_error()
        return True

    @hook("select", fallback=FALSE)
    def select(self) -> int:
        """An initial request: its holder's proxy (location server) or one picked by weight,
        in ``$du``, with the reply and failure routes armed; ``TRUE`` for the caller to relay
        it (``t_relay``), ``FALSE`` when no proxy is available (the caller answers),
        ``STOP`` when it was answered (the location policy's rejection) or held here."""
        started_ns = clock.perf_ns() if self.route_timer is not None else None
        self.refresh()
        KSR.textops.remove_hf(LOAD_HEADER)
        return self._select(started_ns, sealed=None)

    @hook("select", fallback=FALSE)
    def seal_and_select(self) -> int:
        """``seal``, then ``select``, in one entry for a dialog-forming request: what a
        native config's two calls do, with one look at what was published and no read
        back of the seal's mark. ``STOP`` when the seal answered the request."""
        started_ns = clock.perf_ns() if self.route_timer is not None else None
        self.refresh()
        sealed = self._seal(mark=False)
        if sealed == STOP:
            return STOP
        KSR.textops.remove_hf(LOAD_HEADER)
        return self._select(started_ns, sealed=sealed == TRUE)

    def _select(self, started_ns: int | None, sealed: bool | None) -> int:
        """``select`` once the request route took what was published (``refresh``) and
        removed ``X-CP-Load``. ``started_ns``: when the route began, None when nothing is
        timed; ``sealed``: whether ``seal`` marked the request, when the caller knows
        (None: read)."""
        percent = self.view.node_shed_percent
        if percent and admission.node_sheds(percent, self.rng.random()):
            self._shed(metrics.node.SHED_NODE)
            return STOP
        KSR.hdr.append(LOAD_REQUEST)  # the proxy's replies then state its load
        held = self._locate()
        if held.reject:
            metrics.count(metrics.node.REJECTED)
            KSR.sl.sl_send_reply(location.REJECT_CODE, location.REJECT_REASON)
            return STOP
        uri = held.proxy or self._pick()
        if uri is None:
            metrics.count(metrics.node.NO_PROXY)
            return FALSE
        if held.proxy is None and self.settings.timers.hold_queue_ms:
            waiting = holding.count()
            placed = hold.admit(
                uri, self.view.picker.uris, self.view.limits, shared.awaiting, waiting
            )
            if placed is None and self._sheds(waiting):
                return STOP
            if placed is None and sealed:  # the release route arms it: it reads the mark
                avps.set_sealed()
            if placed is None and holding.hold(self.settings.timers.hold_max_ms):
                metrics.count(metrics.node.HELD)
                return STOP
            uri = placed or uri
        self._arm(uri, tried=[], first_branch=0, sealed=sealed)
        metrics.routed(uri, by_location=held.proxy is not None, attempt=1)
        if self.route_timer is not None and started_ns is not None:
            self.route_timer.observe(started_ns)
        return TRUE

    def _sheds(self, held: int) -> bool:
        """Answer 503 with Retry-After, at once, a new request the full pool cannot take
        (``core.admission``); False when it is to be held."""
        limits = [self.view.limits[uri] for uri in self.view.picker.uris if uri in self.view.limits]
        if not admission.sheds(held, limits, self.view.returning, self.settings.timers):
            return False
        self._shed(metrics.node.SHED)
        return True

    def _shed(self, counter: str) -> None:
        """Answer the request 503 with Retry-After, counted as ``counter``."""
        metrics.count(counter)
        KSR.hdr.append_to_reply(f"Retry-After: {self.settings.timers.shed_retry_after_s}\r\n")
        KSR.sl.sl_send_reply(503, SHED_REASON)

    @hook("relay_failed")
    def relay_failed(self) -> int:
        """The caller's ``t_relay`` of the attempt ``select``/``failover`` armed failed: count
        it as the proxy's failure and out of flight."""
        tried = avps.tried()
        if not tried:
            return FALSE
        attempt = avps.Attempt.nth(len(tried) - 1)
        sent = _sent(attempt)
        shared.inflight_add(tried[-1], -1, sent)
        shared.awaiting_add(tried[-1], -1, sent)
        attempt.mark_counted()
        self.view.count_request(tried[-1], failed=True, first_ms=0, final_ms=0)
        return TRUE

    def _locate(self) -> location.Decision:
        """What the location records say of this initial request: its holder's proxy, a
        rejection (``location_fallback = "reject"``), or nothing (choose by weight)."""
        if self.location is None:
            return location.BY_WEIGHT
        try:
            view = self.view
            return self.location.route_initial(
                view.picker.__contains__, view.set_aside.__contains__
            )
        except Exception as error:  # whatever a lookup hits, the request is routed by weight
            guard.failed("location lookup", error)
            return location.Decision(outcome="redis_skipped")

    @hook("seal", fallback=FALSE)
    def seal(self) -> int:
        """Record the route of this dialog-forming request with the balancer's seal (each
        branch, in ``on_branch``), instead of the config's own ``record_route``: the dialogs
        whose in-dialog requests ``in_dialog`` admits. ``TRUE``; ``STOP`` when answered here
        (no From tag: 400; no dialog key loaded from Redis yet: 503): a dialog whose
        in-dialog requests would all be refused is no call."""
        self.refresh()
        return self._seal(mark=True)

    @hook("seal", fallback=FALSE)
    def _seal(self, mark: bool) -> int:
        """``seal`` once the request route took what was published (``refresh``). ``mark``:
        leave the mark ``select`` reads (False: the caller tells ``_select`` itself)."""
        if not read.text("$ft"):
            KSR.sl.sl_send_reply(400, "Missing From Tag")
            return STOP
        if self.keys.signing() is None:
            EDGE.count("no_dialog_key")
            KSR.sl.sl_send_reply(503, "Service Unavailable")
            return STOP
        if mark:  # every attempt armed from now on arms the branch route (``_arm``)
            avps.set_sealed()
        return TRUE

    @hook("branch")
    def on_branch(self) -> int:
        """tm branch route of each branch of a dialog-forming request (armed when
        ``routes.branch`` names one): the config's ``SEAL_ROUTE`` records the route, sealed
        with THIS branch's proxy (failover sends another branch elsewhere), which
        ``in_dialog`` requires."""
        KSR.route(SEAL_ROUTE)
        return 1

    def _pick(self) -> str | None:
        """A proxy by weight, from the table the request route refreshed on entry: the first
        candidate from the worker's evenly spread sequence, so its calls follow the weights
        closely, the second from its random generator (``core.selection``)."""
        return self.view.picker.pick(self.spread, self.rng.random, shared.inflight)

    def _arm(
        self,
        uri: str,
        tried: list[str],
        first_branch: int | None = None,
        sealed: bool | None = None,
    ) -> bool:
        """Make ``uri`` the request's next attempt: ``$du``, its timers, the routes, its
        record in the AVPs and its in-flight counts; False when it cannot be. What the
        caller knows already is not read again: ``first_branch``, tm's branch of the
        request's first attempt (``Attempt.nth``); ``sealed``, whether ``seal`` marked it."""
        if tried:
            # In a failure route tm treats the R-URI as consumed by the failed branch;
            # setting it again, unchanged, makes it a new branch to forward.
            ruri = read.text("$ru")
            if ruri is None:
                return False
            KSR.pv.sets("$ru", ruri)
        KSR.setdsturi(uri)
        attempt = avps.Attempt.nth(len(tried), first_branch)
        sent = attempts.stamp(clock.monotonic_ms())
        routes, failover = self.routes, self.settings.failover
        native = routes.times_provisional
        attempt.start(uri, sent, clock.script_ms() if native else None)
        if native and failover.progress_timeout_ms:
            avps.set_progress_timers(failover.progress_timeout_ms, failover.fr_inv_timer_ms)
        timeout_ms = failover.fr_timer_ms
        if uri in self.view.long_wait:
            timeout_ms = self.settings.timers.saturated_fr_timer_ms
        KSR.tm.t_set_fr(failover.fr_inv_timer_ms, timeout_ms)
        KSR.tm.t_on_reply(routes.reply)
        KSR.tm.t_on_failure(routes.failure)
        if avps.sealed(first=not tried) if sealed is None else sealed:  # its own proxy
            avps.set_seal_proxy(_sealed_form(uri))
            KSR.tm.t_on_branch(routes.branch)
        shared.relayed(uri, sent)
        return True

    def relay(self) -> bool:
        """``t_relay`` the attempt armed; False (counted) when it failed here."""
        if KSR.tm.t_relay() >= 0:
            return True
        self.relay_failed()
        return False

    @hook("release_route")
    def release_route(self) -> int:
        """A held request, resumed by the release tick (``tmx.t_continue``): to the proxy with
        the most room under its limit, or, held ``hold_max_ms``, the least loaded one."""
        if KSR.tm.t_is_canceled() > 0:  # its caller gave up while it was held
            KSR.tm.t_reply(487, "Request Terminated")
            return STOP
        avps.set_resumed()
        picker = self.refresh()
        uri = hold.roomiest(
            picker.uris, self.view.limits, shared.awaiting, releasing=True
        ) or picker.least_loaded(shared.inflight)
        if uri is None:
            metrics.count(metrics.node.NO_PROXY)
            KSR.tm.t_reply(503, "No Proxy Available")
            return STOP
        self._arm(uri, tried=[], first_branch=avps.RESUMED_BRANCH)
        if self.relay():
            metrics.routed(uri, by_location=False, attempt=1)
        else:
            KSR.tm.t_reply(500, "Server Internal Error")
        return STOP

    @hook("release")
    def release_tick(self) -> int:
        """rtimer callback (every 20 ms), in a timer process of its own: the held requests in
        order, each while a proxy has room or once it is overdue, resumed in the release
        route (a KEMI config's; a native one resumes each ``next_release`` itself)."""
        while (held := self.next_release()) is not None:
            holding.resume(held, self.routes.release)
        return TRUE

    def next_release(self) -> holding.Held | None:
        """The oldest held request if a proxy has room for it or it is overdue, taken off the
        queue; None when there is none to resume now."""
        picker = self.refresh()
        now_ms = clock.monotonic_ms()
        for held in self.waiting(now_ms):
            overdue = hold.overdue(now_ms - held.held_ms, self.settings.timers.hold_max_ms)
            if not overdue and not hold.roomiest(
                picker.uris, self.view.limits, shared.awaiting, releasing=True
            ):
                return None
            if overdue:
                metrics.count(metrics.node.HELD_OVERDUE)
            holding.take(held)
            return held
        return None

    # --- replies ------------------------------------------------------------------------------

    @hook("reply")
    def on_reply(self) -> int:
        """tm onreply route of a relayed initial request: time the proxy's replies. Only what
        comes from the proxy's own address counts (tm matches replies by Via branch alone).
        ``FALSE`` when the reply is dropped (a provisional one not from the proxy): a native
        route drops it then (``KSR.set_drop`` inside ``python_exec`` reaches no native
        route); else ``TRUE``."""
        attempt = avps.Attempt.of_reply()
        uri = attempt.proxy if attempt is not None else None
        if attempt is None or uri is None:
            return TRUE
        if attempt.counted:
            if attempt.timed_out:  # given up on, yet it answers: saturated, not dead
                self.view.count_late_reply(uri)
            return TRUE
        status = read.number("$rs") or 0
        from_proxy = self._from_proxy(uri)
        elapsed = attempts.elapsed_ms(attempt.sent_stamp, clock.monotonic_ms())
        if status < 200:
            if not from_proxy:
                if self._from_peer():  # the proxy's, passed on: tm takes it, untimed
                    return TRUE
                KSR.set_drop()  # a provisional reply may be dropped; tm relays no final one twice
                return FALSE
            self._note_load_header(uri)
            progress_ms = self.settings.failover.progress_timeout_ms
            if status == 100 and attempt.trying_ms is None:
                attempt.set_trying_ms(elapsed)
                if progress_ms and attempt.first_reply_ms is None:
                    KSR.tm.t_set_fr(progress_ms, 0)  # tm restarts the branch's timer after this
            elif attempts.marks_first_reply(status, attempt.first_reply_ms is not None):
                attempt.set_first_reply_ms(elapsed)
                shared.awaiting_add(uri, -1, _sent(attempt))  # ringing: the proxy's work is done
                if progress_ms:
                    KSR.tm.t_set_fr(
                        self.settings.failover.fr_inv_timer_ms, 0
                    )  # ringing: its full time
            return TRUE
        result, load = attempts.Outcome.NOT_THE_PROXY, None
        try:
            result = attempts.outcome(status, attempt.first_reply_ms is not None, from_proxy)
            load = read.header(LOAD_HEADER) if from_proxy else None
        finally:  # whatever happened above, the attempt is over: its in-flight count comes down
            self._count_outcome(attempt, uri, result, elapsed, load=load)
        if self.location is not None and 200 <= status < 300 and from_proxy:
            self.location.on_2xx(uri)
        return TRUE

    def _from_proxy(self, uri: str) -> bool:
        """Whether the message being handled came from ``uri``'s address; counted if not.
        One read when it came from the very address and port the proxy is known at (as
        ``route[CP_PROVISIONAL]`` asks it); the source and transport read only otherwise."""
        if read.text(PROXY_AT_SOURCE) == uri:
            return True
        if uri not in self.view.hops:  # a reply may reach a worker that routed no request yet
            self.view.refresh()
        if edge.from_pool(_source(), _stream(), self.view.hops.get(uri, frozenset())):
            return True
        EDGE.count("foreign_reply")
        return False

    @hook("failure", fallback=FALSE)
    def failover(self) -> int:
        """tm failure route: count a silent proxy, then fail over on a proxy's 408, 5xx or
        timeout (not on the callee's after it rang), within the node's retry budget, to the
        untried proxy with the most room: ``TRUE`` with it in ``$du`` and the routes armed
        (the caller relays), ``FALSE`` when there is none (tm answers the caller with the
        failure)."""
        picker = self.refresh()
        tried = avps.tried()
        if not tried:
            return FALSE  # a transaction this balancer did not route
        attempt = avps.Attempt.nth(len(tried) - 1)
        status = read.number("$T_reply_code")
        failure = attempts.Failure(
            timed_out=KSR.tm.t_branch_timeout() > 0,
            replied=KSR.tm.t_branch_replied() > 0,
            rang=attempt.first_reply_ms is not None,
            status=status,
            canceled=KSR.tm.t_is_canceled() > 0,
            attempts=len(tried),
            held=self.location is not None and self.location.keeps_to_holder(),
        )
        if not attempt.counted:  # no final reply from the proxy counted it: a timeout
            elapsed = attempts.elapsed_ms(attempt.sent_stamp, clock.monotonic_ms())
            silent = failure.proxy_silent
            result = attempts.timeout_outcome(silent, failure.rang)
            self._count_outcome(attempt, tried[-1], result, elapsed, timed_out=silent)
        verdict = attempts.fails_over(
            failure, self.settings.failover.max_attempts, shared.take_retry_token
        )
        if verdict == attempts.Verdict.OVER_BUDGET:
            KSR.info(f"counterpoise: {tried[-1]} failed ({status}), retry budget spent\n")
        if verdict != attempts.Verdict.RETRY:
            return FALSE  # tm answers the caller with the failure
        uri = picker.least_loaded(shared.inflight, tried)
        if uri is None or not self._arm(uri, tried):
            return FALSE
        metrics.failed_over(tried[-1])
        metrics.routed(uri, by_location=False, attempt=len(tried) + 1)
        KSR.info(f"counterpoise: {tried[-1]} failed ({status}), retrying on {uri}\n")
        return TRUE

    def _count_outcome(
        self,
        attempt: avps.Attempt,
        uri: str,
        result: attempts.Outcome,
        elapsed: int,
        timed_out: bool = False,
        load: str | None = None,
    ) -> None:
        """Count the attempt's outcome, out of flight, with the load its final reply stated
        (``load``: its ``X-CP-Load``, if any) and the load its provisional replies did."""
        sent, first_reply_ms = _sent(attempt), attempt.first_reply_ms
        shared.inflight_add(uri, -1, sent)
        if first_reply_ms is None:
            shared.awaiting_add(uri, -1, sent)
        attempt.mark_counted(timed_out)
        loads = [] if load is None else [load]
        if self.routes.times_provisional:  # the load its provisional replies stated
            loads += attempt.load_headers
        if timed_out or result == attempts.Outcome.NOT_THE_PROXY:
            if loads:
                self.view.note_load_headers(uri, loads, write=False)  # written with the outcome
            if timed_out:
                self.view.count_timeout(uri, elapsed, self._max_sample_ms)
            else:
                self.view.write_tally(uri)  # the reply's load sample, if it brought one
            return
        failed = result == attempts.Outcome.PROXY_FAILED
        self.view.count_outcome(
            uri, loads, failed, first_reply_ms, elapsed, attempt.trying_ms, self._max_sample_ms
        )

    # --- probes and the sync timer -------------------------------------------------------------

    @hook("probe_reply")
    def on_uac_reply(self) -> int:
        """The outcome of a probe: its reply (evtype 1) or a local timeout (evtype 2)."""
        sent, _, uri = (read.text("$uac_req(evparam)") or "").partition(" ")
        if not uri or not sent.isdigit():
            return TRUE
        code = read.number("$uac_req(evcode)")
        answered = read.number("$uac_req(evtype)") == 1 and code is not None
        if answered and not self._from_proxy(uri):
            return TRUE
        if answered:
            self.view.note_probe_answered(uri, int(sent))
        elif not probe_timeout_counts(int(sent), self.view.probe_answered_ms(uri)):
            return TRUE
        failed = not answered or attempts.is_proxy_failure(code)
        self.view.count_probe(uri, failed, clock.monotonic_ms() - int(sent))
        if answered:
            self._note_load_header(uri)
            if 200 <= code < 300 and read.text("$rm") == "INVITE":
                probes.hang_up(uri)
        return TRUE

    def _note_load_header(self, uri: str) -> None:
        """Feed the ``X-CP-Load`` of the reply being handled, if it has one, to the policy."""
        value = read.header(LOAD_HEADER)  # "": present but not UTF-8, a rejected header
        if value is not None:
            self.view.note_load_headers(uri, (value,))

    @hook("sync")
    def sync_tick(self) -> int:
        """rtimer callback: one step of the sync loop, in the timer process."""
        if self.follow_settings():
            shared.bump_version()  # the workers look at the settings at their next request
        if self.sync is None:
            self.sync = self._make_sync_loop()
            drained = self.location
            if drained is not None and self.settings.location.dialog_record_ttl_ms:
                self.dialog_writes = DialogWriteBehind(self.settings, _notice)
                drained = drained.queueing_in(self.dialog_writes.own)
            replies = QueuedReplies(lambda: self._max_sample_ms)
            self.dialog_events = DialogEvents(drained, replies)
            self.metrics = metrics.Endpoint(self.settings, _notice)
            self.dialog_keys = dialog_keys.DialogKeyLoader(self.settings, _notice)
            self.node_load = node_load.NodeLoad(self.settings)
        sync, writes, endpoint = self.sync, self.dialog_writes, self.metrics
        started_s = clock.monotonic_s()
        # The tick, the flush and the metrics fail independently: none may stop the others.
        # The keys first: once the node's rows are in Redis, it checks every seal.
        if self.dialog_keys is not None:
            guard.isolated("dialog keys", self.dialog_keys.load)
        if self.dialog_events is not None:  # the queued replies' outcomes count in this tick
            guard.isolated("dialog events", self.dialog_events.drain)
        guard.isolated("sync tick", sync.tick)
        guard.isolated("native dialog table", lambda: self.native_dialog.publish(self.settings))
        if self.node_load is not None:
            load, settings = self.node_load, self.settings
            guard.isolated("node load", lambda: load.tick(settings))
        if writes is not None:
            guard.isolated("dialog flush", writes.flush)
        guard.isolated(
            "node view", lambda: self.node_view.update(sync, clock.monotonic_ms(), clock.wall_ms())
        )
        if endpoint is not None:
            dialog_errors = writes.errors if writes is not None else 0
            guard.isolated(
                "metrics",
                lambda: endpoint.after_tick(sync, clock.monotonic_s() - started_s, dialog_errors),
            )
        return TRUE

    def follow_settings(self) -> bool:
        """Take the runtime settings ``counterpoise up`` pushed since the last look; whether
        it pushed any since."""
        changes = self.settings_feed.changes()
        if not changes:
            return changes is not None
        try:
            self.settings = with_runtime(self.settings, changes)
        except SettingError as error:  # up checked them; keep running on the old ones
            KSR.err(f"counterpoise: runtime settings refused: {error}\n")
            return True
        self._max_sample_ms = int(self.settings.latency.failure_penalty_ms)
        if self.sync is not None:  # the timer process: says it once for the node
            self.sync.settings = self.settings
            _notice(f"settings changed at runtime: {changes}")
        return True

    def _make_sync_loop(self) -> SyncLoop:
        node = self.settings.node.node_name()
        store = PoolStore.open(
            self.settings.redis.redis_url,
            self.settings.redis.key_prefix,
            self.settings.redis.redis_timeout_ms,
            self.settings.redis.redis_password_file,
        )
        KSR.info(f"counterpoise: node {node}, Redis {redact(self.settings.redis.redis_url)}\n")
        return SyncLoop(
            settings=self.settings,
            node=node,
            shared=shared.SharedTable(),
            probes=probes.UacProbeSender(
                self.settings.probes.probe_from_uri,
                self.settings.probes.probe_contact_uri,
                self.settings.probes.probe_method,
                self.settings.probes.probe_invite_user,
            ),
            store=store,
            monotonic_ms=clock.monotonic_ms,
            wall_ms=clock.wall_ms,
            log=_notice,
        )


@functools.lru_cache(maxsize=SEALED_FORMS_MEMO)
def _sealed_form(uri: str) -> str:
    """What a branch to pool proxy ``uri`` is sealed with (``dialog_seal.Hop.sealed``); ""
    when it names no hop the seal can hold (the branch is recorded unsealed)."""
    proxy = dialog_seal.proxy_hop(uri)
    return proxy.sealed() if proxy is not None else ""


def _sent(attempt: avps.Attempt) -> int:
    """The attempt's relay stamp, which names the epoch of its counts (now if it has none)."""
    sent = attempt.sent_stamp
    return attempts.stamp(clock.monotonic_ms()) if sent is None else sent


def _source() -> edge.Address:
    """Where the message being handled came from (``$si``, ``$sp``)."""
    return edge.hop(read.text("$si") or "", read.number("$sp"))


def _stream() -> bool:
    """Whether the message being handled came over a connection (TCP, TLS), not UDP."""
    return read.text("$pr") not in ("udp", None)


def _admitted() -> bool:
    """Whether ``IN_DIALOG_ROUTE`` relayed the request it just ended (not refused it)."""
    return KSR.pv.get(ADMITTED) == 1


_VIA_FIELDS = ("transport", "host", "port", "received", "rport", "branch")
"""What of the next Via Kamailio forwards a reply by, in ``stray.reply_upstream``'s order."""


def _stray_reply_verifies(secret: Callable[[str], bytes | None]) -> bool:
    """Whether the reply being handled carries, in its top Via, the signature of the request
    it answers, made for its next Via (``core.stray``; one made before it, for a request an
    old node relayed during an upgrade)."""
    version, param = next(
        (
            (name, value)
            for name in stray.VERSIONS
            if (value := read.text(f"$sel(via[1].params.{name})")) is not None
        ),
        (stray.STRAY_PARAM, None),
    )
    upstream = stray.reply_upstream(*(read.text(f"$sel(via[2].{field})") for field in _VIA_FIELDS))
    return stray.verifies(
        param, read.text("$ci"), read.text("$cs"), read.text("$rm"), upstream, secret, version
    )


def _notice(text: str) -> None:
    KSR.notice(f"counterpoise: {text}\n")
