"""The KEMI routing object: what app_python3 calls for every SIP message and timer tick.

Thin glue over the core: SIP mechanics here, decisions in ``core`` (``attempts`` for
failover and timing, ``selection`` for the choice, ``location`` for the holder). Kamailio's
conventions hold: a ``ksr_*`` method returns 1 to go on, and the numeric return codes of KSR
functions (negative = false) never leave this package. Per-transaction data lives in AVPs
(``avps``), because a reply may be handled by another worker than its request.
"""

from __future__ import annotations

import os
import random
import time

import KSR

from counterpoise import clock
from counterpoise.core import attempts, location
from counterpoise.core.settings import SettingError, Settings, load_settings, with_runtime
from counterpoise.core.sync import SyncLoop
from counterpoise.kamailio import avps, metrics, probes, shared
from counterpoise.kamailio.location import DialogWriteBehind, LocationRouting
from counterpoise.kamailio.view import NodeViewTable
from counterpoise.store.client import redact
from counterpoise.store.pool import PoolStore

DIALOG_FORMING = "INVITE,SUBSCRIBE,REFER"
MAX_FORWARDS_LIMIT = 70
"""Max-Forwards inserted when a request has none (RFC 3261 recommends 70)."""
SANITY_CHECKS = 1511
"""The sanity module's default checks (R-URI and Via SIP version, R-URI scheme, required
headers, CSeq method and value, Content-Length, Expires, Proxy-Require): a request failing
one is answered 400 by the module itself and goes no further."""
SANITY_URI_CHECKS = 7
"""Parse the R-URI, From and To URIs too."""


class KemiApp:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # mod_init runs before Kamailio forks: per-process state is made in child_init.
        self.view = shared.WorkerView()
        self.settings_feed = shared.SettingsFeed()
        self.rng = random.Random()
        self.sync: SyncLoop | None = None
        self._max_sample_ms = int(settings.failure_penalty_ms)
        self.location: LocationRouting | None = None
        self.dialog_writes: DialogWriteBehind | None = None
        self._failures: set[tuple[str, str]] = set()
        self.metrics: metrics.Endpoint | None = None
        self.node_view = NodeViewTable()
        # Timing each routed request is part of the metrics: off with the endpoint.
        self.route_timer = metrics.RouteTimer() if settings.metrics_listen else None
        self._route_started_ns = 0
        if settings.location_server:
            self.location = LocationRouting(settings, _notice)

    # --- hooks app_python3 requires ------------------------------------------------------

    def child_init(self, rank: int) -> int:
        self.view = shared.WorkerView()
        self.rng.seed(os.getpid() ^ time.monotonic_ns())
        return 0

    def ksr_reply_route(self, msg: object) -> int:
        """Every reply the node receives, before tm matches it: a proxy's reply that is not a
        failure, however late, is a sign of life (``policy``: overload is not death)."""
        status = KSR.pv.get("$rs")
        if isinstance(status, int) and not attempts.is_proxy_failure(status):
            source = f"sip:{KSR.pv.gete('$si')}:{KSR.pv.get('$sp')}"
            self.view.note_heard(source, clock.monotonic_ms())
        return 1

    def ksr_onsend_route(self, msg: object) -> int:
        return 1

    # --- requests ----------------------------------------------------------------------------

    def ksr_request_route(self, msg: object) -> int:
        if self.route_timer is not None:
            self._route_started_ns = clock.perf_ns()
        self._follow_settings()
        if not self.ksr_route_reqinit():
            return 1
        if KSR.is_CANCEL():
            if KSR.tm.t_check_trans() > 0:
                KSR.tm.t_relay()
            return 1
        if KSR.siputils.has_totag() > 0:
            self.ksr_route_withindlg()
            return 1
        if KSR.is_ACK():
            if KSR.tm.t_check_trans() > 0:
                KSR.tm.t_relay()
            return 1
        KSR.tm.t_check_trans()
        if self.ksr_route_local():
            return 1
        self.ksr_route_dispatch()
        return 1

    def ksr_route_reqinit(self) -> bool:
        """Max-Forwards and well-formedness; False when the request was answered here."""
        if KSR.maxfwd.process_maxfwd(MAX_FORWARDS_LIMIT) < 0:
            KSR.sl.sl_send_reply(483, "Too Many Hops")
            return False
        if KSR.sanity.sanity_check(SANITY_CHECKS, SANITY_URI_CHECKS) < 0:
            KSR.err(f"counterpoise: malformed request from {KSR.pv.gete('$si')}, answered 400\n")
            return False
        return True

    def ksr_route_withindlg(self) -> None:
        """In-dialog requests follow the Record-Route set their dialog built; without a usable
        one, their dialog record (location server)."""
        if KSR.rr.loose_route() > 0:
            if self.location is not None and KSR.is_BYE():
                self.location.dialog_ended()
            KSR.tm.t_set_fr(0, self.settings.in_dialog_fr_timer_ms)
            if KSR.tm.t_relay() >= 0:
                metrics.count(metrics.node.IN_DIALOG_RECORD_ROUTE)
            return
        if KSR.is_ACK():
            matched = KSR.tm.t_check_trans()
            if matched > 0:
                KSR.tm.t_relay()
            if matched >= 0:  # relayed, or the ACK of a negative reply tm absorbed (0)
                return
        if self.ksr_route_dialog_record() or KSR.is_ACK():
            return
        KSR.sl.sl_send_reply(404, "Not here")

    def ksr_route_dialog_record(self) -> bool:
        """Relay an in-dialog request to the proxy its dialog record names, with that proxy
        as the Route so the proxy's own loose_route takes it; False when there is none."""
        proxy = self.location.route_dialog() if self.location is not None else None
        if proxy is None:
            return False
        KSR.hdr.insert(f"Route: <{proxy};lr>\r\n")
        KSR.setdsturi(proxy)
        KSR.tm.t_set_fr(0, self.settings.in_dialog_fr_timer_ms)
        if KSR.tm.t_relay() >= 0:
            metrics.count(metrics.node.IN_DIALOG_DIALOG_RECORD)
        elif not KSR.is_ACK():
            KSR.sl.sl_reply_error()
        return True

    def ksr_route_local(self) -> bool:
        """Answer requests aimed at the balancer itself (an OPTIONS keepalive)."""
        if not (KSR.is_OPTIONS() and KSR.is_myself_ruri() and KSR.corex.has_ruri_user() < 0):
            return False
        KSR.sl.sl_send_reply(200, "OK")
        return True

    def ksr_route_dispatch(self) -> None:
        if KSR.is_method_in("IS") or KSR.is_REFER():  # INVITE, SUBSCRIBE, REFER
            KSR.rr.record_route()
        held = self.ksr_route_location()
        if held.reject:
            metrics.count(metrics.node.REJECTED)
            KSR.sl.sl_send_reply(location.REJECT_CODE, location.REJECT_REASON)
            return
        uri = held.proxy or self._pick()
        if uri is None:
            metrics.count(metrics.node.NO_PROXY)
            KSR.sl.sl_send_reply(503, "No Proxy Available")
            return
        if self._relay(uri, tried=[]):
            metrics.routed(uri, by_location=held.proxy is not None, attempt=1)
            if self.route_timer is not None:
                self.route_timer.observe(self._route_started_ns)
        else:
            KSR.sl.sl_reply_error()

    def ksr_route_location(self) -> location.Decision:
        """What the location records say of this initial request: its holder's proxy, a
        rejection (``location_fallback = "reject"``), or nothing (choose by weight)."""
        if self.location is None:
            return location.Decision()
        try:
            return self.location.route_initial(self.view.refresh().__contains__)
        except Exception as error:  # whatever a lookup hits, the request is routed by weight
            self._failed_once("location lookup", error)
            return location.Decision(outcome="redis_skipped")

    def _pick(self) -> str | None:
        picker = self.view.refresh()
        return picker.pick(self.rng.random, shared.inflight)

    def _relay(self, uri: str, tried: list[str]) -> bool:
        if tried:
            # In a failure route tm treats the R-URI as consumed by the failed branch;
            # setting it again, unchanged, makes it a new branch to forward.
            KSR.pv.sets("$ru", KSR.pv.gete("$ru"))
        KSR.setdsturi(uri)
        avps.set_tried([*tried, uri])
        attempt = avps.Attempt(len(tried))
        attempt.start(uri, attempts.stamp(clock.monotonic_ms()))
        timeout_ms = self.settings.fr_timer_ms
        if self.view.queueing.get(uri):
            timeout_ms = self.settings.saturated_fr_timer_ms
        KSR.tm.t_set_fr(self.settings.fr_inv_timer_ms, timeout_ms)
        KSR.tm.t_on_reply("ksr_route_reply")
        KSR.tm.t_on_failure("ksr_route_failure")
        shared.inflight_add(uri, +1)
        if KSR.tm.t_relay() < 0:
            shared.inflight_add(uri, -1)
            attempt.mark_counted()
            self.view.count_request(uri, failed=True, first_ms=0, final_ms=0)
            return False
        return True

    # --- replies ------------------------------------------------------------------------------

    def ksr_route_reply(self, msg: object) -> int:
        """tm onreply route of a relayed initial request: time the proxy's replies."""
        attempt = avps.Attempt.of_reply()
        uri = attempt.proxy if attempt is not None else None
        if attempt is None or uri is None:
            return 1
        if attempt.counted:
            if attempt.timed_out:  # given up on, yet it answers: saturated, not dead
                self.view.count_late_reply(uri)
            return 1
        status = KSR.pv.get("$rs")
        elapsed = attempts.elapsed_ms(attempt.sent_stamp, clock.monotonic_ms())
        self._note_load_header(uri)
        if status < 200:
            if status == 100 and attempt.trying_ms is None:
                attempt.set_trying_ms(elapsed)
            elif attempts.marks_first_reply(status, attempt.first_reply_ms is not None):
                attempt.set_first_reply_ms(elapsed)
            return 1
        self._count_outcome(attempt, uri, attempts.is_proxy_failure(status), elapsed)
        if self.location is not None and 200 <= status < 300:
            self.location.on_2xx(uri)
        return 1

    def ksr_route_failure(self, msg: object) -> int:
        """tm failure route: count a silent proxy, then fail over on 408, 5xx or timeout,
        within the node's retry budget, to the untried proxy with the most room."""
        self._follow_settings()
        tried = avps.tried()
        attempt = avps.Attempt(len(tried) - 1)
        status = KSR.pv.get("$T_reply_code")
        failure = attempts.Failure(
            timed_out=KSR.tm.t_branch_timeout() > 0,
            replied=KSR.tm.t_branch_replied() > 0,
            rang=attempt.first_reply_ms is not None,
            status=status if isinstance(status, int) else None,
            canceled=KSR.tm.t_is_canceled() > 0,
            attempts=len(tried),
            held=self.location is not None and self.location.keeps_to_holder(),
        )
        if not attempt.counted:
            # No final reply from the proxy: a timeout. After a provisional reply it is the
            # callee that did not answer, not a proxy failure.
            elapsed = attempts.elapsed_ms(attempt.sent_stamp, clock.monotonic_ms())
            silent = failure.proxy_silent
            self._count_outcome(attempt, tried[-1], silent, elapsed, timed_out=silent)
        verdict = attempts.fails_over(failure, self.settings.max_attempts, shared.take_retry_token)
        if verdict == attempts.Verdict.OVER_BUDGET:
            KSR.info(f"counterpoise: {tried[-1]} failed ({status}), retry budget spent\n")
        if verdict != attempts.Verdict.RETRY:
            return 1  # tm answers the caller with the failure
        uri = self.view.refresh().least_loaded(shared.inflight, tried)
        if uri is not None and self._relay(uri, tried):
            metrics.failed_over(tried[-1])
            metrics.routed(uri, by_location=False, attempt=len(tried) + 1)
            KSR.info(f"counterpoise: {tried[-1]} failed ({status}), retrying on {uri}\n")
        return 1

    def _count_outcome(
        self, attempt: avps.Attempt, uri: str, failed: bool, elapsed: int, timed_out: bool = False
    ) -> None:
        attempt.mark_counted(timed_out)
        shared.inflight_add(uri, -1)
        if timed_out:
            self.view.count_timeout(uri, elapsed, self._max_sample_ms)
            return
        sample = attempts.latency_sample_ms(
            attempt.first_reply_ms, elapsed, self._max_sample_ms, attempt.trying_ms
        )
        self.view.count_request(uri, failed, sample, elapsed)

    # --- probes and the sync timer -------------------------------------------------------------

    def ksr_uac_reply(self, msg: object, evname: str) -> int:
        """The outcome of a probe: its reply (evtype 1) or a local timeout (evtype 2)."""
        sent, _, uri = KSR.pv.gete("$uac_req(evparam)").partition(" ")
        if not uri or not sent.isdigit():
            return 1
        code = KSR.pv.get("$uac_req(evcode)")
        answered = KSR.pv.get("$uac_req(evtype)") == 1 and isinstance(code, int)
        failed = not answered or attempts.is_proxy_failure(code)
        self.view.count_probe(uri, failed, clock.monotonic_ms() - int(sent))
        if answered:
            self._note_load_header(uri)
            if 200 <= code < 300 and KSR.pv.gete("$rm") == "INVITE":
                probes.hang_up(uri)
        return 1

    def _note_load_header(self, uri: str) -> None:
        """Feed the ``X-CP-Load`` of the reply being handled, if it has one, to the policy."""
        value = KSR.hdr.get("X-CP-Load")
        if isinstance(value, str):
            self.view.note_load_header(uri, value)

    def ksr_sync_tick(self, msg: object, evname: str = "") -> int:
        """rtimer callback: one step of the sync loop, in the timer process."""
        self._follow_settings()
        if self.sync is None:
            self.sync = self._make_sync_loop()
            if self.location is not None and self.settings.dialog_record_ttl_ms:
                self.dialog_writes = DialogWriteBehind(self.settings, _notice)
            self.metrics = metrics.Endpoint(self.settings, _notice)
        started_s = clock.monotonic_s()
        # The tick, the flush and the metrics fail independently: none may stop the others.
        try:
            self.sync.tick()
        except Exception as error:  # caught broadly: see above
            self._failed_once("sync tick", error)
        if self.dialog_writes is not None:
            try:
                self.dialog_writes.flush()
            except Exception as error:  # caught broadly: see above
                self._failed_once("dialog flush", error)
        try:
            self.node_view.update(self.sync, clock.monotonic_ms(), clock.wall_ms())
        except Exception as error:  # caught broadly: see above
            self._failed_once("node view", error)
        if self.metrics is not None:
            dialog_errors = self.dialog_writes.errors if self.dialog_writes is not None else 0
            try:
                self.metrics.after_tick(self.sync, clock.monotonic_s() - started_s, dialog_errors)
            except Exception as error:  # caught broadly: see above
                self._failed_once("metrics", error)
        return 1

    def _failed_once(self, what: str, error: Exception) -> None:
        """Log an unexpected failure of ``what`` once per process and kind of error (they
        repeat every tick or request); the next tick or request runs as usual."""
        key = (what, type(error).__name__)
        if key not in self._failures:
            self._failures.add(key)
            KSR.err(f"counterpoise: {what} failed, carrying on: {type(error).__name__}: {error}\n")

    def _follow_settings(self) -> None:
        """Take the runtime settings ``counterpoise up`` pushed since the last look."""
        changes = self.settings_feed.changes()
        if not changes:
            return
        try:
            self.settings = with_runtime(self.settings, changes)
        except SettingError as error:  # up checked them; keep running on the old ones
            KSR.err(f"counterpoise: runtime settings refused: {error}\n")
            return
        self._max_sample_ms = int(self.settings.failure_penalty_ms)
        if self.sync is not None:  # the timer process: says it once for the node
            self.sync.settings = self.settings
            _notice(f"settings changed at runtime: {changes}")

    def _make_sync_loop(self) -> SyncLoop:
        node = self.settings.node_name()
        store = PoolStore.open(
            self.settings.redis_url,
            self.settings.key_prefix,
            self.settings.redis_timeout_ms,
            self.settings.redis_password_file,
        )
        KSR.info(f"counterpoise: node {node}, Redis {redact(self.settings.redis_url)}\n")
        return SyncLoop(
            settings=self.settings,
            node=node,
            shared=shared.SharedTable(),
            probes=probes.UacProbeSender(
                self.settings.probe_from_uri,
                self.settings.probe_contact_uri,
                self.settings.probe_method,
                self.settings.probe_invite_user,
            ),
            store=store,
            monotonic_ms=clock.monotonic_ms,
            wall_ms=clock.wall_ms,
            log=_notice,
        )


def _notice(text: str) -> None:
    KSR.notice(f"counterpoise: {text}\n")


def create() -> KemiApp:
    return KemiApp(load_settings())
