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
from collections.abc import Callable, Iterable

from counterpoise.core.settings import Settings

STAMP_MASK = 0x7FFFFFFF
"""Kamailio's integer AVPs are signed 32-bit: a monotonic millisecond stamp is kept modulo
2^31 (24.8 days), and an elapsed time is the difference modulo the same."""


INFLIGHT_EPOCH_MS = 200_000
"""In-flight counts are kept per epoch of the relay's stamp: 200 s, longer than any attempt
lasts (tm ends an INVITE transaction at its ``max_inv_lifetime``, 180 s by default, which
kamailio.cfg keeps; a non-INVITE one at 32 s). Every attempt relayed in an epoch has ended
by the end of the next one, so whatever an older epoch still counts is drift: an attempt
whose outcome was never counted (a worker that died mid-transaction, a bug)."""
EPOCHS = -(-(STAMP_MASK + 1) // INFLIGHT_EPOCH_MS)
"""Epochs per wrap of the 31-bit stamp: epoch numbers count modulo this."""


def stamp(now_ms: int) -> int:
    """A monotonic ms time as it fits an integer AVP."""
    return now_ms & STAMP_MASK


def elapsed_ms(start_stamp: int | None, now_ms: int) -> int:
    """Milliseconds from ``start_stamp`` (``stamp()`` of an earlier time) to ``now_ms``; 0
    when there is no stamp. Correct across the 2^31 wrap for spans under 24.8 days."""
    if start_stamp is None:
        return 0
    return (stamp(now_ms) - start_stamp) & STAMP_MASK


def epoch(sent_stamp: int) -> int:
    """The in-flight epoch of an attempt relayed at ``sent_stamp``."""
    return sent_stamp // INFLIGHT_EPOCH_MS


def live_epochs(now_ms: int) -> tuple[int, int]:
    """The epochs whose attempts may still be in flight: the current one and the one before
    (across the stamp's wrap, the last, shorter epoch comes before epoch 0)."""
    current = epoch(stamp(now_ms))
    return current, (current - 1) % EPOCHS


def stale_inflight(keys: Iterable[str], now_ms: int) -> list[str]:
    """The in-flight counters (``"<uri> <epoch>"``) of epochs no attempt can still be in:
    their counts are drift, to be dropped. A key that does not parse is stale too."""
    live = {str(number) for number in live_epochs(now_ms)}
    return [key for key in keys if key.rpartition(" ")[2] not in live]


def is_proxy_failure(status: int) -> bool:
    """A reply that says the proxy, not the callee, failed: 408 or any 5xx.

    Locally generated 408s (no answer before ``fr_timer_ms``) arrive here the same way."""
    return status == 408 or 500 <= status <= 599


class Outcome(enum.Enum):
    """What a final reply (or a timeout) says of the proxy an attempt went to."""

    OK = "ok"
    """The proxy did its work: counted as a success, timed."""
    PROXY_FAILED = "proxy_failed"
    """The proxy failed (no reply at all, or 408/5xx before any sign of the callee)."""
    NOT_THE_PROXY = "not_the_proxy"
    """Says nothing of the proxy: the callee's 5xx/408/timeout after it rang, or a reply
    that did not come from the proxy's address. Not counted; the in-flight count still
    comes down."""


def outcome(status: int, rang: bool, from_proxy: bool = True) -> Outcome:
    """The outcome of a final reply. ``rang``: a provisional reply other than 100 Trying came
    first; the 100 is the proxy's own, a 180/183 is the callee's, so a 503 or 408 after it
    is the callee's answer relayed by a working proxy."""
    if not from_proxy or (rang and is_proxy_failure(status)):
        return Outcome.NOT_THE_PROXY
    return Outcome.PROXY_FAILED if is_proxy_failure(status) else Outcome.OK


def timeout_outcome(silent: bool, rang: bool) -> Outcome:
    """The outcome of an attempt that ended in the failure route without a counted final
    reply: no reply at all is the proxy's failure; after a 180/183 the callee did not
    answer; after a 100 alone the proxy was working on it (counted as a success, as
    before)."""
    if silent:
        return Outcome.PROXY_FAILED
    return Outcome.NOT_THE_PROXY if rang else Outcome.OK


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
    reply at all, or 408/5xx before the callee rang), the caller did not cancel, attempts
    remain, the request is not bound to its location holder, and ``take_token()`` grants a
    retry from the node's budget (asked last, so only a retry that is otherwise due spends
    one). A callee's 408, 5xx or timeout after it rang is relayed to the caller as it is:
    another proxy would ring the same phone again."""
    proxy_failed = failure.proxy_silent or (
        failure.status is not None and outcome(failure.status, failure.rang) == Outcome.PROXY_FAILED
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
        window = self._settings.failover.retry_budget_window_ms
        while self._ticks and self._ticks[0][0] <= now_ms - window:
            _, old_requests, old_retries = self._ticks.popleft()
            self._requests -= old_requests
            self._retries -= old_retries
        allowed = (
            self._settings.failover.retry_budget_floor_per_s * window / 1000
            + self._settings.failover.retry_budget_fraction * self._requests
        )
        return max(int(allowed) - self._retries, 0)
