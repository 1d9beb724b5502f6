"""The rules of one relayed request's attempts, as the Kamailio edge applies them.

Pure: the edge reads the values from Kamailio (status codes, AVPs, the clock) and asks these
functions what they mean. Attempt ``i`` of a request is tm branch ``i`` (the balancer never
forks); each attempt goes to one proxy, is timed from its relay, and its outcome is counted
once, by the reply route or the failure route, whichever sees it first.
"""

from __future__ import annotations

import dataclasses

STAMP_MASK = 0x7FFFFFFF
"""Kamailio's integer AVPs are signed 32-bit: a monotonic millisecond stamp is kept modulo
2^31 (24.8 days), and an elapsed time is the difference modulo the same."""


def stamp(now_ms: int) -> int:
    """A monotonic ms time as it fits an integer AVP."""
    return now_ms & STAMP_MASK


def elapsed_ms(start_stamp: int | None, now_ms: int) -> int:
    """Milliseconds from ``start_stamp`` (``stamp()`` of an earlier time) to ``now_ms``; 0
    when there is no stamp. Correct across the 2^31 wrap for spans under 24.8 days."""
    if start_stamp is None:
        return 0
    return (stamp(now_ms) - start_stamp) & STAMP_MASK


def is_proxy_failure(status: int) -> bool:
    """A reply that says the proxy, not the callee, failed: 408 or any 5xx.

    Locally generated 408s (no answer before ``fr_timer_ms``) arrive here the same way."""
    return status == 408 or 500 <= status <= 599


def marks_first_reply(status: int, first_already_set: bool) -> bool:
    """Whether a provisional reply is the first sign of the proxy's work on the request. A
    proxy sends 100 Trying before it works on a request; the first other reply (180/183, or
    the final one) comes after that work, so it is what a proxy's latency is timed to."""
    return 100 < status < 200 and not first_already_set


def latency_sample_ms(first_reply_ms: int | None, elapsed: int, cap_ms: int) -> int:
    """The latency an attempt reports of its proxy: the time to its first reply other than
    100 Trying (the final reply when there was none), capped at ``cap_ms`` (the failure
    penalty) so that no sample weighs more than a failure: a callee answering after 30 s
    with no 180 on the way says nothing of the proxy."""
    return min(first_reply_ms if first_reply_ms is not None else elapsed, cap_ms)


@dataclasses.dataclass(frozen=True)
class Failure:
    """What the failure route knows of a failed attempt."""

    timed_out: bool
    """No final reply before the branch's timer (``fr_timer_ms``, or ``fr_inv_timer_ms``
    after a provisional reply): the status is then tm's own 408."""
    replied: bool
    """The proxy sent some reply, if only 100 Trying."""
    rang: bool
    """A provisional reply other than 100 Trying came (180/183): the callee was alerted."""
    status: int | None
    """The final status tm has for the transaction (its own 408 on a timeout)."""
    canceled: bool
    """The caller cancelled: nothing more is to be tried."""
    attempts: int
    """Proxies tried so far, this one included."""
    held: bool
    """The request went to its location holder and must stay there (``reject`` fallback)."""

    @property
    def proxy_silent(self) -> bool:
        """No reply at all from the proxy before ``fr_timer_ms``: the proxy failed."""
        return self.timed_out and not self.replied


def fails_over(failure: Failure, max_attempts: int) -> bool:
    """Whether to retry a failed attempt on another proxy: only when the proxy failed (no
    reply at all, 408 or 5xx), the caller did not cancel, attempts remain, and the request is
    not bound to its location holder. A timeout after the callee rang is the callee not
    answering, not a proxy failure: another proxy would ring the same phone again."""
    proxy_failed = failure.proxy_silent or (
        failure.status is not None
        and is_proxy_failure(failure.status)
        and not (failure.timed_out and failure.rang)
    )
    return (
        proxy_failed
        and not failure.canceled
        and failure.attempts < max_attempts
        and not failure.held
    )
