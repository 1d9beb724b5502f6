"""The node's own load: the timer process measures its UDP SIP sockets' receive backlog each
sync tick and publishes the share of new initial requests to shed (``core.admission``); the
SIP workers read that share with the routing table (``shared.WorkerView``), never /proc."""

from __future__ import annotations

import KSR

from counterpoise.core import admission
from counterpoise.core.settings import Settings
from counterpoise.kamailio import htables, shared

PROC_NET_UDP = ("/proc/net/udp", "/proc/net/udp6")
BACKLOGS_KEPT = 2
"""``admission.next_node_shed_percent`` looks at the latest two ticks."""


class NodeLoad:
    """The timer process's side: backlog samples and the published share."""

    def __init__(self, settings: Settings) -> None:
        self._ports = frozenset(
            socket.port for socket in settings.node.listen_sockets() if socket.proto == "udp"
        )
        self._backlogs: list[int] = []
        self._percent = 0

    def tick(self, settings: Settings) -> None:
        """One sample of the backlog; the share published when it changed."""
        if not self._ports:
            return  # no UDP socket of ours is known (an operator's own config): nothing read
        backlog = sum(
            admission.receive_backlog_bytes(_read(path), self._ports) for path in PROC_NET_UDP
        )
        self._backlogs = [*self._backlogs, backlog][-BACKLOGS_KEPT:]
        percent = admission.next_node_shed_percent(self._percent, self._backlogs, settings.timers)
        if percent != self._percent:
            KSR.htable.sht_seti(htables.ROUTING.name, htables.NODE_SHED_PERCENT, percent)
            shared.bump_version()
            if not self._percent or not percent:
                KSR.notice(f"counterpoise: node overload shedding {percent} % of new calls\n")
        self._percent = percent


def _read(path: str) -> str:
    try:
        with open(path) as table:
            return table.read()
    except OSError:
        return ""
