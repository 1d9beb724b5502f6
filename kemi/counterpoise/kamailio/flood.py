"""Per-source rate limits, shedding and the ban list, checked before any other work on a request.

Two shared-memory tables: ``htables.RATES`` counts each source IP's requests in fixed 1 s
windows (``sht_inc`` is atomic across workers; a window's keys expire by the table's
autoexpire), ``htables.BANS`` holds the banned IPs, each with its own expiry
(``flood_ban_ms``). A source over its limit is shed, request by request, in that window only
(``edge.flood_verdict``); it is banned only after ``flood_ban_windows`` windows in a row past
twice its limit. A banned source gets no reply and costs two shared-memory lookups per
packet: replying to a flood would only amplify it. The pool's proxies and the trusted
upstreams are never counted.
"""

from __future__ import annotations

import math

import KSR

from counterpoise import clock
from counterpoise.core import edge
from counterpoise.core.settings import Settings
from counterpoise.kamailio import htables
from counterpoise.kamailio.counters import EDGE

WINDOW_MS = 1000
"""The limits are per second; ``htables.RATES`` expires a window's keys two windows later."""
REGISTER = "R"
"""Key prefix of the REGISTER counters, apart from the all-request ones."""
FLOODING = "S"
"""Key prefix of a source's count of flooding windows in a row (no hex digit: no IP's key)."""
RETRY_AFTER = f"Retry-After: {WINDOW_MS // 1000}\r\n"
"""A shed request may come back in the source's next window."""


class FloodGuard:
    def __init__(self, settings: Settings) -> None:
        self._trusted = edge.Upstreams(edge.parse_networks(settings.edge.trusted_upstreams))
        self._all_per_s = settings.edge.flood_requests_per_s
        self._registers_per_s = settings.edge.flood_registers_per_s
        self._ban_windows = settings.edge.flood_ban_windows
        self._ban_s = max(1, math.ceil(settings.edge.flood_ban_ms / 1000))

    def admits(self, ip: str, is_register: bool) -> bool:
        """Whether the request from ``ip`` goes on; when not, it was answered 503 (shed) or
        dropped (banned, or past the ceiling)."""
        if self._trusted.trusts(ip):
            return True
        if KSR.htable.sht_is_null(htables.BANS.name, ip) < 0:
            EDGE.count("dropped_banned")
            return False
        now_ms = clock.wall_ms()
        verdict = self._verdict("", ip, now_ms, self._all_per_s, is_register)
        if is_register and verdict is edge.Flood.ADMIT:
            verdict = self._verdict(REGISTER, ip, now_ms, self._registers_per_s, True)
        if verdict is edge.Flood.ADMIT:
            return True
        if verdict is edge.Flood.SHED:
            EDGE.count("shed")
            KSR.hdr.append_to_reply(RETRY_AFTER)
            KSR.sl.sl_send_reply(503, "Over Rate Limit")
        else:
            EDGE.count("dropped_flood")
        return False

    def _verdict(self, kind: str, ip: str, now_ms: int, limit: int, register: bool) -> edge.Flood:
        """What this request gets under the ``kind`` limit; the first request of a window
        past the ceiling counts the window as flooding."""
        if not limit:
            return edge.Flood.ADMIT
        count = KSR.htable.sht_inc(htables.RATES.name, edge.window_key(ip, now_ms, WINDOW_MS, kind))
        count = count if isinstance(count, int) else 0
        if count <= limit:
            return edge.Flood.ADMIT
        if edge.breaks_ceiling(count, limit):
            self._note_flooding_window(kind, ip, now_ms)
        return edge.flood_verdict(count, limit, register or _starts_work())

    def _note_flooding_window(self, kind: str, ip: str, now_ms: int) -> None:
        """One more window in a row past the ceiling; the ban when there are enough."""
        previous = KSR.htable.sht_get(
            htables.RATES.name, edge.window_key(ip, now_ms - WINDOW_MS, WINDOW_MS, FLOODING + kind)
        )
        in_a_row = (previous if isinstance(previous, int) else 0) + 1
        key = edge.window_key(ip, now_ms, WINDOW_MS, FLOODING + kind)
        KSR.htable.sht_seti(htables.RATES.name, key, in_a_row)
        if not edge.ban_due(in_a_row, self._ban_windows):
            return
        KSR.htable.sht_setxi(htables.BANS.name, ip, 1, self._ban_s)
        EDGE.count("banned")
        what = "REGISTER" if kind == REGISTER else "request"
        KSR.notice(
            f"counterpoise: {ip} banned for {self._ban_s} s (over twice its {what} limit"
            f" {in_a_row} s in a row)\n"
        )


def _starts_work() -> bool:
    """Whether the request begins a dialog or a transaction of its own: neither an ACK nor a
    CANCEL (they belong to an INVITE's transaction), nor a request with a To tag, nor the
    retransmission of a request admitted before (a 503 to it would end an admitted call)."""
    if KSR.is_ACK() or KSR.is_CANCEL() or KSR.siputils.has_totag() > 0:
        return False
    return KSR.tm.t_lookup_request() < 0
