"""The rules of one relayed request's attempts, as the Kamailio edge applies them.

Pure: the edge reads the values from Kamailio (status codes, AVPs, the clock) and asks these
functions what they mean. Attempt ``i`` of a request is tm branch ``i`` (the balancer never
forks); each attempt goes to one proxy, is timed from its relay, and its outcome is counted
once, by the reply route or the failure route, whichever sees it first.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
from collections.abc import Callable

from counterpoise.core.settings import Settings

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


def latency_sample_ms(
    first_reply_ms: int | None, elapsed: int, cap_ms: int, trying_ms: int | None = None
) -> int:
    """The latency an attempt reports of its proxy: the time to its first reply other than
    100 Trying (the final reply when there was none), capped at ``cap_ms`` (the failure
    penalty) so that no sample weighs more than a failure: a callee answering after 30 s
    with no 180 on the way says nothing of the proxy. But when the proxy's 100 Trying
    itself came later than that (``trying_ms``), the request waited that long in the
    proxy's queue before any worker took it: that wait is the proxy's, whatever the callee
    does, and counts uncapped, so a long queue weighs more than a short one."""
    first = min(first_reply_ms if first_reply_ms is not None else elapsed, cap_ms)
    return max(first, trying_ms or 0)


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


class Verdict(enum.StrEnum):
    """What the failure route does with a failed attempt."""

    RETRY = "retry"
    """Relay the request to another proxy (a retry token was taken)."""
    ANSWER = "answer"
    """Nothing to retry: tm answers the caller with the best reply it has."""
    OVER_BUDGET = "over_budget"
    """A retry was due but the node's retry budget is spent: the caller gets the failure."""


def fails_over(failure: Failure, max_attempts: int, take_token: Callable[[], bool]) -> Verdict:
    """Whether to retry a failed attempt on another proxy: only when the proxy failed (no
    reply at all, 408 or 5xx), the caller did not cancel, attempts remain, the request is
    not bound to its location holder, and ``take_token()`` grants a retry from the node's
    budget (asked last, so only a retry that is otherwise due spends one). A timeout after
    the callee rang is the callee not answering, not a proxy failure: another proxy would
    ring the same phone again."""
    proxy_failed = failure.proxy_silent or (
        failure.status is not None
        and is_proxy_failure(failure.status)
        and not (failure.timed_out and failure.rang)
    )
    due = (
        proxy_failed
        and not failure.canceled
        and failure.attempts < max_attempts
        and not failure.held
    )
    if not due:
        return Verdict.ANSWER
    return Verdict.RETRY if take_token() else Verdict.OVER_BUDGET


class RetryBudget:
    """The node's retry budget (Finagle's ``RetryBudget``, counted per balancer node): over
    the last ``retry_budget_window_ms``, retries may be at most ``retry_budget_floor_per_s``
    per second plus ``retry_budget_fraction`` of the requests relayed.

    The timer process owns it: each tick it is told the attempts the workers completed in
    that tick (from their tallies, which it sums anyway) and the retries they have spent in
    all (a shared-memory counter), and answers how many retry tokens the workers may take
    until the next tick. A SIP worker's share of the work is reading the tokens and counting
    a retry (``kamailio.shared``): no Redis, no lock, no per-request write.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._ticks: collections.deque[tuple[int, int, int]] = collections.deque()
        """(time, requests, retries) of each tick within the window."""
        self._requests = 0
        self._retries = 0
        self._retries_seen: int | None = None

    def tokens(self, now_ms: int, attempts: int, retries_total: int) -> int:
        """Retry tokens for the next tick: ``attempts`` completed in this tick (retries
        included), ``retries_total`` spent since the node started."""
        spent = 0 if self._retries_seen is None else max(retries_total - self._retries_seen, 0)
        self._retries_seen = retries_total
        requests = max(attempts - spent, 0)  # initial requests: the budget's base
        self._ticks.append((now_ms, requests, spent))
        self._requests += requests
        self._retries += spent
        window = self._settings.retry_budget_window_ms
        while self._ticks and self._ticks[0][0] <= now_ms - window:
            _, old_requests, old_retries = self._ticks.popleft()
            self._requests -= old_requests
            self._retries -= old_retries
        allowed = (
            self._settings.retry_budget_floor_per_s * window / 1000
            + self._settings.retry_budget_fraction * self._requests
        )
        return max(int(allowed) - self._retries, 0)
