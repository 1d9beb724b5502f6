"""The node's queue of held requests (``core.hold``), in shared memory.

A held request is a tm transaction suspended (``tmx.t_suspend``: the caller has its 100
Trying, and tm absorbs its retransmissions); the release timer resumes it with
``tmx.t_continue``, which runs the release route (``Balancer.release_route``) on it. The
queue is the htable ``htables.HELD``: the requests from ``head`` (excluded) to ``tail`` are
held.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import KSR

from counterpoise import clock
from counterpoise.kamailio import htables, read

HOLD_QUEUE_MAX = 5000
"""Requests held at once, at most: beyond it a request is relayed at once, as with holding
off. 5000 is 100 s of a 50 calls/s pool's backlog, far past any caller's patience, and a few
hundred kB of shared memory."""
UNWRITTEN_GRACE_MS = 1000
"""How long an entry may stay missing or unreadable before the release timer skips it: its
worker writes it microseconds after taking its number, so 1 s (50 release ticks) only
passes when that worker died in between."""


@dataclasses.dataclass(frozen=True)
class Held:
    seq: int
    index: int
    label: int
    held_ms: int
    """When it was held (``clock.monotonic_ms``: one clock for every process)."""


def _get(key: str) -> int:
    value = KSR.htable.sht_get(htables.HELD.name, key)
    return value if isinstance(value, int) else 0


def count() -> int:
    """Requests held now (two shared-memory reads, made here: every new request asks)."""
    tail = KSR.htable.sht_get(htables.HELD.name, htables.HELD_TAIL)
    head = KSR.htable.sht_get(htables.HELD.name, htables.HELD_HEAD)
    if not isinstance(tail, int):
        return 0
    return max(tail - (head if isinstance(head, int) else 0), 0)


def hold(hold_max_ms: int) -> bool:
    """Suspend the request being routed and queue it; False when it cannot be (the queue is
    full, or tm refused), and the caller relays it at once instead."""
    if count() >= HOLD_QUEUE_MAX:
        return False
    # tm keeps a suspended transaction with a branch of no destination, timed by the
    # first-reply timer: it must outlast the hold, or tm answers 408 before the release.
    timeout_ms = hold_max_ms + 1000
    KSR.tm.t_set_fr(timeout_ms, timeout_ms)
    if KSR.tmx.t_suspend() < 0:
        return False
    index, label = read.number("$T(id_index)"), read.number("$T(id_label)")
    if index is None or label is None:
        return False
    seq = KSR.htable.sht_inc(htables.HELD.name, htables.HELD_TAIL)
    KSR.htable.sht_sets(htables.HELD.name, str(seq), f"{index} {label} {clock.monotonic_ms()}")
    return True


class Waiting:
    """The release timer's reading of the queue. An entry not written yet (a worker between
    its ``sht_inc`` and ``sht_sets``, microseconds apart) stops the reading until the next
    tick; one still missing or unreadable ``UNWRITTEN_GRACE_MS`` later (its worker died
    between the two) is skipped, so it cannot block the queue behind it for good."""

    def __init__(self) -> None:
        self._missing: tuple[int, int] | None = None
        """The entry found missing, and when it was first."""

    def __call__(self, now_ms: int) -> Iterator[Held]:
        """The held requests in order, oldest first."""
        head, tail = _get(htables.HELD_HEAD), _get(htables.HELD_TAIL)
        for seq in range(head + 1, tail + 1):
            value = KSR.htable.sht_get(htables.HELD.name, str(seq))
            fields = value.split() if isinstance(value, str) else []
            if len(fields) == 3 and all(field.isdigit() for field in fields):
                index, label, held_ms = (int(field) for field in fields)
                yield Held(seq, index, label, held_ms)
                continue
            if self._missing is None or self._missing[0] != seq:
                self._missing = (seq, now_ms)
            if now_ms - self._missing[1] < UNWRITTEN_GRACE_MS:
                return
            KSR.htable.sht_seti(htables.HELD.name, htables.HELD_HEAD, seq)
            KSR.htable.sht_rm(htables.HELD.name, str(seq))


def take(held: Held) -> None:
    """Take ``held`` off the queue, to be resumed now."""
    KSR.htable.sht_seti(htables.HELD.name, htables.HELD_HEAD, held.seq)
    KSR.htable.sht_rm(htables.HELD.name, str(held.seq))


def resume(held: Held, function: str) -> None:
    """Resume ``held`` (taken): the KEMI ``function`` runs now, in this process. If tm no
    longer has it (its caller cancelled and tm answered, or its timer fired), ``t_continue``
    does nothing but say so in the log. (tmx's KEMI ``t_continue`` runs a KEMI function
    only: a native config resumes it with its own ``t_continue`` and route block.)"""
    KSR.tmx.t_continue(held.index, held.label, function)
