"""Per-source rate limits and the ban list, checked before any other work on a request.

Two shared-memory tables: ``htables.RATES`` counts each source IP's requests in fixed 1 s
windows (``sht_inc`` is atomic across workers; a window's keys expire by the table's
autoexpire), ``htables.BANS`` holds the banned IPs, each with its own expiry
(``flood_ban_ms``). A banned source gets no reply and costs two shared-memory lookups per
packet: replying to a flood would only amplify it.
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


class FloodGuard:
    def __init__(self, settings: Settings) -> None:
        self._all_per_s = settings.edge.flood_requests_per_s
        self._registers_per_s = settings.edge.flood_registers_per_s
        self._ban_s = max(1, math.ceil(settings.edge.flood_ban_ms / 1000))

    def admits(self, ip: str, is_register: bool) -> bool:
        """False when ``ip`` is banned, or breaks a limit with this request (and is banned)."""
        if KSR.htable.sht_is_null(htables.BANS.name, ip) < 0:
            EDGE.count("dropped_banned")
            return False
        now_ms = clock.wall_ms()
        broken, first = self._breaks("", ip, now_ms, self._all_per_s)
        if is_register and not broken:
            broken, first = self._breaks(REGISTER, ip, now_ms, self._registers_per_s)
        if not broken:
            return True
        KSR.htable.sht_setxi(htables.BANS.name, ip, 1, self._ban_s)
        EDGE.count("dropped_banned")  # refused like every later request of the banned source
        if first:  # workers racing past the limit before the ban is seen all refuse; one counts
            EDGE.count("banned")
            KSR.notice(f"counterpoise: {ip} banned for {self._ban_s} s ({broken} limit)\n")
        return False

    def _breaks(self, kind: str, ip: str, now_ms: int, limit: int) -> tuple[str, bool]:
        """The name of the limit this request breaks ("" if none), and whether it is the
        first request to break it in its window (``sht_inc`` is atomic: one worker gets the
        count just past the limit)."""
        if not limit:
            return "", False
        count = KSR.htable.sht_inc(htables.RATES.name, edge.window_key(ip, now_ms, WINDOW_MS, kind))
        count = count if isinstance(count, int) else 0
        if not edge.over_limit(count, limit):
            return "", False
        return ("REGISTER" if kind == REGISTER else "request"), count == limit + 1
