"""Counts of what one balancer saw of one proxy: requests, their latency, probes.

SIP workers are separate processes. Each keeps a cumulative ``Tally`` per proxy and writes it,
encoded, into its own key of a shared-memory table; it is the only writer of that key, so no
lock is needed. The sync process reads all keys and subtracts its previous reading to get what
happened since its last tick: ``Tally`` supports ``+`` and ``-`` for that.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Sequence

_FIELDS = (
    "requests_ok",
    "requests_failed",
    "first_reply_ms_sum",
    "final_reply_ms_sum",
    "probes_ok",
    "probes_failed",
    "probe_ms_sum",
    "load_headers_rejected",
    "load_samples",
    "load_milli_sum",
    "late_replies",
    "timeout_excess_ms_sum",
    "trying_ms_sum",
)
_VALUES = operator.attrgetter(*_FIELDS)


@dataclasses.dataclass(frozen=True)
class Tally:
    requests_ok: int = 0
    """Requests relayed to the proxy that got a final reply that is not a proxy failure."""
    requests_failed: int = 0
    """Requests that timed out, or got 408 or 5xx from the proxy."""
    first_reply_ms_sum: int = 0
    """Sum over ``requests_ok`` of milliseconds from relaying to the first reply other than
    100 Trying (a 180/183, or the final reply): the proxy's own work on the request, which a
    100 sent before that work does not show. Each sample is capped at ``failure_penalty_ms``."""
    final_reply_ms_sum: int = 0
    """Sum over ``requests_ok`` of milliseconds from relaying to the final reply."""
    probes_ok: int = 0
    """Probes the proxy answered (any reply below 500 other than 408)."""
    probes_failed: int = 0
    """Probes that timed out or got 408 or 5xx."""
    probe_ms_sum: int = 0
    """Sum over ``probes_ok`` of probe round-trip milliseconds."""
    load_headers_rejected: int = 0
    """Replies whose ``X-CP-Load`` header could not be used (garbled or incomplete)."""
    load_samples: int = 0
    """Replies whose ``X-CP-Load`` gave a utilisation."""
    load_milli_sum: int = 0
    """Sum over ``load_samples`` of that utilisation, in thousandths. Every reply counts, not
    only the latest: a header is a point sample of small integers (1 of 2 workers busy), and
    the mean of all of a window's samples is far steadier than any one of them."""
    late_replies: int = 0
    """Replies to requests already given up on (counted failed when ``fr_timer_ms`` ran out
    with no reply): the proxy is alive, only late. A sign of life that ends a failure streak
    (``policy``), so a saturated proxy is not taken for a dead one."""
    timeout_excess_ms_sum: int = 0
    """Sum over requests that timed out with no reply of the milliseconds they waited beyond
    ``failure_penalty_ms``: a request given up on after 4 s says its proxy takes at least
    4 s, and two saturated proxies charged the same flat penalty would look alike however
    long their queues."""
    trying_ms_sum: int = 0
    """Sum over ``requests_ok`` of milliseconds from relaying to the proxy's 100 Trying, when
    it came before the first reply counted in ``first_reply_ms_sum`` (0 otherwise): a proxy
    answers 100 when a worker takes the request, so this is the wait in its queue, and the
    rest of the first reply's time is the work itself (``policy.service``)."""

    def __add__(self, other: Tally) -> Tally:
        return Tally(*(getattr(self, f) + getattr(other, f) for f in _FIELDS))

    def __sub__(self, other: Tally) -> Tally:
        return Tally(*(getattr(self, f) - getattr(other, f) for f in _FIELDS))

    def _plus(self, **deltas: int) -> Tally:
        """This tally with ``deltas`` added to the named counts. A reply's event, on a SIP
        worker's per-call path: the copy's fields are filled from a dict at once, not one
        frozen ``__setattr__`` each as ``__init__`` (or ``dataclasses.replace``) would."""
        values = self.__dict__.copy()
        for name, delta in deltas.items():
            values[name] += delta
        tally = object.__new__(Tally)
        tally.__dict__.update(values)
        return tally

    def with_load_sample(self, utilisation: float) -> Tally:
        return self.with_load_readings([round(utilisation * 1000)], 0)

    def with_load_header_rejected(self) -> Tally:
        return self._plus(load_headers_rejected=1)

    def with_load_readings(self, milli: Sequence[int], rejected: int) -> Tally:
        """The ``X-CP-Load`` headers of one reply and its provisional ones, in one copy: the
        utilisation each usable one stated (in thousandths), and how many were unusable."""
        return self._plus(
            load_samples=len(milli), load_milli_sum=sum(milli), load_headers_rejected=rejected
        )

    @property
    def samples(self) -> int:
        return self.requests_ok + self.requests_failed + self.probes_ok + self.probes_failed

    @property
    def successes(self) -> int:
        return self.requests_ok + self.probes_ok

    @property
    def failures(self) -> int:
        return self.requests_failed + self.probes_failed

    @property
    def signs_of_life(self) -> int:
        """Answers that show the proxy alive: successes, and late replies to requests that
        had timed out."""
        return self.successes + self.late_replies

    def with_timeout(self, waited_ms: int, penalty_ms: int) -> Tally:
        """A request that got no reply at all within its timer: a failure, charged what it
        waited when that is more than the failure penalty."""
        return self._plus(requests_failed=1, timeout_excess_ms_sum=max(waited_ms - penalty_ms, 0))

    def with_late_reply(self) -> Tally:
        return self._plus(late_replies=1)

    @property
    def went_back(self) -> bool:
        """Whether a count is below zero: a difference of two readings of a process whose
        counts started again from zero (it restarted) in between."""
        return any(count < 0 for count in _VALUES(self))

    def encode(self) -> str:
        """Space-separated integers: compact, and readable in ``kamcmd htable.dump``."""
        return " ".join(map(str, _VALUES(self)))

    @classmethod
    def decode(cls, text: str) -> Tally:
        values = [int(part) for part in text.split()]
        if len(values) != len(_FIELDS) or min(values) < 0:
            raise ValueError(f"not a tally: {text!r}")
        return cls(*values)

    def with_request(
        self, failed: bool, first_ms: int, final_ms: int, trying_ms: int | None = None
    ) -> Tally:
        """A request's outcome; ``trying_ms``: when its 100 Trying came, if before the first
        reply (at most ``first_ms``: the queue wait is part of the first reply's time)."""
        if failed:
            return self._plus(requests_failed=1)
        first = max(first_ms, 0)
        return self._plus(
            requests_ok=1,
            first_reply_ms_sum=first,
            final_reply_ms_sum=max(final_ms, 0),
            trying_ms_sum=min(max(trying_ms or 0, 0), first),
        )

    def with_probe(self, failed: bool, rtt_ms: int) -> Tally:
        if failed:
            return self._plus(probes_failed=1)
        return self._plus(probes_ok=1, probe_ms_sum=max(rtt_ms, 0))


NOTHING = Tally()
"""No counts: where a proxy has none yet (frozen, so one object serves every lookup)."""
