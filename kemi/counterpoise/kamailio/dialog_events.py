"""The timer process's side of the queue the config's native routes fill
(``htables.DIALOG_EVENTS``): the sealed ACKs and BYEs of the in-dialog route
(``embed/counterpoise-dialog.cfg``) and the proxies' final replies the reply route counted
out of flight (route ``CP_FINAL`` of ``embed/counterpoise.cfg``). Each tick it reads and
removes them in queue order and does for each what a SIP worker would have done in Python
(``LocationRouting.dialog_confirmed``, ``dialog_ended``, ``native_dialog_started``; the
outcome's tally, ``QueuedReplies``), so the worker enters no Python for them.

One queue for both: a 2xx's dialog record is checked and counted before the ACK of that 2xx
confirms it, because the reply route runs before tm relays the 2xx, so the reply takes the
earlier slot and the drain goes in slot order. A dialog record is confirmed or ended at the
next tick instead of at once; its Redis write then goes the usual way
(``DialogWriteBehind``)."""

from __future__ import annotations

from collections.abc import Callable

import KSR

from counterpoise.core import location, queued_reply
from counterpoise.core.queued_reply import QueuedReply
from counterpoise.kamailio import htables, shared
from counterpoise.kamailio.counters import EDGE
from counterpoise.kamailio.location import LocationRouting

SLOT_SPAN = 2**32
"""Slots are numbered by a Kamailio htable integer, which wraps (after weeks at 1000 calls/s):
they are read in the order of their distance past the last slot read, modulo this span."""
UNREADABLE = "queued_event_unreadable"
"""Edge counter: a queued line that is no event (it is dropped)."""


class QueuedReplies:
    """The outcomes of the queued replies, each counted in this process's own tally of its
    proxy (a ``WorkerView`` made in the timer process: its own ``cptally`` keys, cumulative
    as a worker's, which the sync loop sums with theirs), written once per drain."""

    def __init__(self, cap_ms: Callable[[], int]) -> None:
        self._view = shared.WorkerView()
        self._cap_ms = cap_ms
        """The failure penalty, as the settings are now (a latency sample's cap)."""
        self._counted: set[str] = set()

    def count(self, reply: QueuedReply) -> None:
        """The attempt's outcome: a final reply from its proxy that is not a failure (the
        only ones the route queues)."""
        self._view.count_outcome(
            reply.proxy,
            reply.loads,
            False,
            reply.first_reply_ms,
            reply.final_ms,
            reply.trying_ms,
            self._cap_ms(),
            write=False,
        )
        self._counted.add(reply.proxy)

    def write(self) -> None:
        for uri in self._counted:
            self._view.write_tally(uri)
        self._counted.clear()


class DialogEvents:
    def __init__(self, routing: LocationRouting | None, replies: QueuedReplies) -> None:
        self._routing = routing
        """The location server (None when it is off: a reply's dialog is not recorded)."""
        self._replies = replies
        self._read = 0
        """The last slot read; the route's counter starts at 0 too (``NativeDialogTable``)."""

    def drain(self) -> None:
        queued = shared.items(htables.DIALOG_EVENTS)
        if not queued:
            return
        ordered = sorted((self._after(key), key, str(line)) for key, line in queued)
        if self._routing is None:
            self._handle(ordered, None)
        else:
            with self._routing.counts_written_once():
                self._handle(ordered, self._routing)
        self._replies.write()
        distance, key, _ = ordered[-1]
        if distance >= 0:  # the workers bound the queue against the last slot read
            self._read = int(key)
            KSR.htable.sht_seti(htables.ROUTING.name, htables.DIALOG_EVENT_READ, self._read)

    def _handle(self, ordered: list[tuple[int, str, str]], routing: LocationRouting | None) -> None:
        table = htables.DIALOG_EVENTS.name
        not_utf8 = 0  # ids and values that are not UTF-8, counted once a drain
        try:
            for _, key, line in ordered:
                KSR.htable.sht_rm(table, key)
                if line.startswith(queued_reply.START):
                    reply = QueuedReply.parse(line)
                    if reply is None:
                        EDGE.count(UNREADABLE)
                        continue
                    not_utf8 += reply.not_utf8
                    self._replies.count(reply)
                    if routing is not None and reply.dialog is not None:
                        routing.native_dialog_started(reply.proxy, reply.dialog)
                    continue
                event = location.DialogEvent.parse(line)
                if event is None:
                    EDGE.count(UNREADABLE)
                    continue
                not_utf8 += event.not_utf8
                if routing is None:
                    continue
                elif event.confirms:
                    ids = (event.call_id, event.from_tag, event.to_tag)
                    routing.dialog_confirmed(ids, event.source)
                else:
                    routing.dialog_ended((event.call_id, event.from_tag, event.to_tag))
        finally:  # what was read is counted, whatever stopped the drain
            if not_utf8:
                EDGE.count("not_utf8", not_utf8)

    def _after(self, key: str) -> int:
        """How far past the last slot read the slot ``key`` is; -1, read first and only
        removed, for a key that is no slot."""
        if not key.lstrip("-").isdigit():
            return -1
        return (int(key) - self._read) % SLOT_SPAN
