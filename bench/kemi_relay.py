"""The routes of ``bench/dispatcher.cfg`` (alg 4) as a minimal Python KEMI script: the
floor of what a Python KEMI balancer costs per call (``bench/kemi_relay.cfg``). Like
Counterpoise it enters Python for every request and every reply (the core reply route), and
arms a tm reply route on what it relays, so the difference is the work, not the entries."""

import KSR

MAX_ATTEMPTS = 3
"""Destinations tried per request, as ``DS_MAX_ATTEMPTS`` of dispatcher.cfg."""
IN_DIALOG_FR_TIMER_MS = 30000
"""As dispatcher.cfg: in-dialog requests get tm's default 30 s timer."""


class Relay:
    def child_init(self, rank: int) -> int:
        return 0

    def ksr_request_route(self, msg: object) -> int:
        if KSR.maxfwd.process_maxfwd(10) < 0:
            KSR.sl.sl_send_reply(483, "Too Many Hops")
            return 1
        if KSR.sanity.sanity_check(17895, 7) < 0:
            KSR.sl.sl_send_reply(400, "Bad Request")
            return 1
        if KSR.is_OPTIONS() and KSR.is_myself_ruri() and KSR.corex.has_ruri_user() < 0:
            KSR.sl.sl_send_reply(200, "OK")
            return 1
        if KSR.is_CANCEL():
            if KSR.tm.t_check_trans() > 0:
                KSR.tm.t_relay()
            return 1
        if not KSR.is_ACK():
            if KSR.tmx.t_precheck_trans() > 0:
                KSR.tm.t_check_trans()
                return 1
            KSR.tm.t_check_trans()
        if KSR.siputils.has_totag() > 0:
            self.within_dialog()
            return 1
        KSR.hdr.remove("Route")
        if KSR.is_method_in("IS") or KSR.is_REFER():
            KSR.rr.record_route()
        if KSR.dispatcher.ds_select_dst_limit(1, 4, MAX_ATTEMPTS) < 0:
            KSR.sl.sl_send_reply(503, "No Proxy Available")
            return 1
        self.relay()
        return 1

    def relay(self) -> None:
        KSR.tm.t_on_reply("ksr_onreply")
        KSR.tm.t_on_failure("ksr_failure")
        if KSR.tm.t_relay() < 0:
            KSR.sl.sl_reply_error()

    def within_dialog(self) -> None:
        if KSR.rr.loose_route() > 0:
            KSR.tm.t_set_fr(0, IN_DIALOG_FR_TIMER_MS)
            if KSR.tm.t_relay() < 0:
                KSR.sl.sl_reply_error()
            return
        if KSR.is_ACK():
            if KSR.tm.t_check_trans() > 0:
                KSR.tm.t_relay()
            return
        KSR.sl.sl_send_reply(404, "Not here")

    def ksr_reply_route(self, msg: object) -> int:
        """Every reply received (the core reply route): a stray one is dropped."""
        if KSR.tm.t_check_trans() < 0:
            KSR.set_drop()
        return 1

    def ksr_onreply(self, msg: object) -> int:
        return 1

    def ksr_failure(self, msg: object) -> int:
        if KSR.tm.t_is_canceled() > 0:
            return 1
        if KSR.tm.t_branch_timeout() > 0:
            if KSR.tm.t_branch_replied() > 0:
                return 1
        elif KSR.tm.t_check_status("408|5[0-9][0-9]") < 0:
            return 1
        KSR.dispatcher.ds_mark_dst_state("tp")
        if KSR.dispatcher.ds_next_dst() > 0:
            self.relay()
        return 1


def mod_init() -> Relay:
    return Relay()
