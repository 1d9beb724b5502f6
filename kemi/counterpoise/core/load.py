"""Load the proxies report about themselves, made into one utilisation per proxy.

Pure (no Kamailio, no Redis, clocks passed in). Two sources say how loaded a proxy is:

* its **agent** (``counterpoise-agent``, a ``reports.LoadReport`` in Redis): the utilisation
  is the larger of the CPU utilisation of the proxy's processes and, when the agent was given
  a capacity, transactions in progress over that capacity;
* its **replies** (``X-CP-Load``, parsed by ``reports.parse_load_header``): ``busy`` (the
  workers' time spent on requests over the latest second, per mille), or from a proxy that
  does not send it the requests it has in progress (``active``, else ``tx``) over
  ``workers``; capped at 1.

Each source of each proxy has a ``Track`` that says whether it may count now, the way gRPC's
weighted round robin treats its backend metrics: a source counts once it has been renewed
without a gap for ``blackout_ms`` (the first samples after a start are the least settled),
and stops counting when it has not been renewed for ``expiry_ms`` (a dead agent must not
freeze a weight); after such a gap the blackout starts again. Times are the reader's
monotonic clock at receipt, never the sender's stamp, so clock skew between hosts cannot make
a report look fresh.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from counterpoise.core.reports import BadReport, HeaderLoad, LoadReport, decode
from counterpoise.core.settings import Settings
from counterpoise.core.untrusted import BadRecord


@dataclasses.dataclass(frozen=True)
class Track:
    utilisation: float
    """The average of the values received since the blackout ended, in [0, 1] (the latest
    value while in blackout, shown but not counted): a report is a point sample of small
    integers (2 of 4 workers busy) that jumps at every reading."""
    since_ms: int
    """Start of the current unbroken run of updates (gRPC's ``non_empty_since``)."""
    updated_ms: int
    """When the latest value was received."""
    values: int = 0
    """Values averaged in ``utilisation``: those received after the blackout."""


def renew(
    previous: Track | None,
    utilisation: float,
    now_ms: int,
    blackout_ms: int,
    expiry_ms: int,
    tau_ms: float,
) -> Track:
    """The track after a new value arrived at ``now_ms``; a new run after a gap.

    Values that arrive in the blackout are not averaged: the first ones after a start are
    the least settled (a Kamailio's tmx statistics, which ``X-CP-Load`` reads, are 0 for its
    first 2 s and then refreshed every 2 s per process). After it, the average is the plain
    mean of the values until an exponentially weighted average with time constant ``tau_ms``
    would weigh a new value less (about one time constant), then that average: an average
    started from a run's first values takes several time constants to forget them."""
    if previous is None or now_ms - previous.updated_ms > expiry_ms:
        previous = Track(utilisation, now_ms, now_ms)
    if now_ms - previous.since_ms < blackout_ms:
        return Track(utilisation, previous.since_ms, now_ms)
    values = previous.values + 1
    alpha = 1.0 - math.exp(-max(now_ms - previous.updated_ms, 0) / tau_ms)
    alpha = max(alpha, 1.0 / values)
    smoothed = previous.utilisation + (utilisation - previous.utilisation) * alpha
    return Track(smoothed, previous.since_ms, now_ms, values)


def counted(track: Track | None, now_ms: int, blackout_ms: int, expiry_ms: int) -> float | None:
    """The utilisation to use now, or None while in blackout (or no value since), expired,
    or never received."""
    if track is None or now_ms - track.updated_ms > expiry_ms:
        return None
    if now_ms - track.since_ms < blackout_ms or track.values == 0:
        return None
    return track.utilisation


def report_utilisation(report: LoadReport) -> float | None:
    """What an agent's report says of the proxy's load; None if it measured nothing usable."""
    values = []
    if report.cpu_utilisation is not None:
        values.append(report.cpu_utilisation)
    if report.transactions is not None and report.capacity:
        values.append(min(1.0, report.transactions / report.capacity))
    return max(values) if values else None


def header_utilisation(header: HeaderLoad) -> float:
    """The utilisation an ``X-CP-Load`` header states, from the first of its fields present:
    ``busy / 1000``, else ``active / workers``, else ``tx / workers``; capped at 1.
    ``BadReport`` if it has none of them (or a count without ``workers``, or ``workers=0``).

    ``busy`` wins: it is a time average of what the workers did, where ``active`` is one read
    of a count that tmx refreshes at most every 2 s, that reads 0 for 2 s after a start, and
    that counts a ringing call as load for as long as it rings. ``active`` beats ``tx``, which
    also counts the transactions tm keeps 5 s after their end. A proxy that cannot time its
    workers still steers its weight by the requests it has in progress."""
    if header.busy is not None:
        return min(1.0, header.busy / 1000)
    in_progress = header.active if header.active is not None else header.tx
    if in_progress is None or header.workers is None:
        raise BadReport("X-CP-Load: needs busy=, or active= (or tx=) and workers=")
    if header.workers == 0:
        raise BadReport("X-CP-Load: workers=0")
    return min(1.0, in_progress / header.workers)


REPORT = "report"
"""Source name of an agent's reports (also their name in Redis records and counters)."""
HEADER = "header"
"""Source name of the ``X-CP-Load`` header of replies."""
POOL = "pool"
"""Source name of the operator's pool records (``cp:pool``, ``cp:pool:version``)."""
LOCATION = "location"
"""Source name of the location records the SIP workers read (pins, registrations, dialogs)."""


class LoadBook:
    """Every proxy's load sources, and every rejected input, for the sync loop.

    A rejected input is counted per source, logged once per proxy and source with its reason
    (again only after that source was accepted in between), and never touches a track. The
    sources are the load's (``REPORT``, ``HEADER``) and the other records the node reads from
    Redis (``POOL``, ``LOCATION``), so ``cp:rejects:<node>`` holds every rejection.
    """

    def __init__(self, settings: Settings, log: Callable[[str], None]) -> None:
        self._settings = settings
        self._log = log
        self._tracks: dict[tuple[str, str], Track] = {}
        self._last_raw: dict[str, bytes] = {}
        self._reports: dict[str, LoadReport] = {}
        self._last_seq: dict[str, int] = {}
        self._silenced: set[tuple[str, str]] = set()
        self.rejected: dict[str, int] = {REPORT: 0, HEADER: 0, POOL: 0, LOCATION: 0}
        """Inputs rejected so far, per source."""
        self.last_reason: dict[str, str] = {}
        """The latest rejection of each source: ``"<proxy>: <reason>"``."""

    # --- inputs ------------------------------------------------------------------------

    def take_report(self, uri: str, raw: bytes | None, now_ms: int, wall_ms: int) -> None:
        """An agent's report as read from Redis (None: there is none). Only a report not seen
        before renews the track, so a report left in Redis by a dead agent ages out; one whose
        sequence number is not above the last accepted one is a replay and rejected."""
        if raw is None or raw == self._last_raw.get(uri):
            return
        self._last_raw[uri] = raw
        try:
            report = decode(raw, wall_ms)
            if report.proxy != uri:
                raise BadReport(f"report names {report.proxy}, stored under {uri}")
            if report.seq <= self._last_seq.get(uri, -1):
                raise BadReport(f"seq {report.seq} is not above {self._last_seq[uri]} (a replay)")
        except BadRecord as error:
            self.reject(REPORT, uri, str(error))
            return
        self.accept(REPORT, uri)
        self._last_seq[uri] = report.seq
        self._reports[uri] = report
        utilisation = report_utilisation(report)
        if utilisation is not None:
            self._renew(REPORT, uri, utilisation, now_ms)

    def take_header(self, uri: str, now_ms: int, utilisation: float) -> None:
        """The mean utilisation a window of a proxy's replies stated in ``X-CP-Load``."""
        self.accept(HEADER, uri)
        self._renew(HEADER, uri, utilisation, now_ms)

    def reject(self, source: str, uri: str, reason: str, count: int = 1) -> None:
        self.rejected[source] += count
        self.last_reason[source] = f"{uri}: {reason}"
        if (source, uri) not in self._silenced:
            self._silenced.add((source, uri))
            self._log(f"rejected {source} of {uri}: {reason} (counted; logged once)")

    def forget(self, uri: str) -> None:
        """Drop what is known of a proxy that left the pool."""
        for source in (REPORT, HEADER):
            self._tracks.pop((source, uri), None)
        self._last_raw.pop(uri, None)
        self._reports.pop(uri, None)
        self._last_seq.pop(uri, None)

    # --- outputs -----------------------------------------------------------------------

    def utilisation(self, uri: str, now_ms: int) -> float | None:
        """The load that counts now: the higher of the fresh sources, None if none is."""
        values = [
            v for v in (self._counted(s, uri, now_ms) for s in (REPORT, HEADER)) if v is not None
        ]
        return max(values) if values else None

    def describe(self, uri: str, now_ms: int) -> dict[str, dict[str, object]]:
        """Each source's latest value, its age and whether it counts, for Redis."""
        described: dict[str, dict[str, object]] = {}
        for source in (REPORT, HEADER):
            track = self._tracks.get((source, uri))
            if track is None:
                continue
            described[source] = {
                "utilisation": round(track.utilisation, 4),
                "age_ms": now_ms - track.updated_ms,
                "counts": self._counted(source, uri, now_ms) is not None,
            }
        report = self._reports.get(uri)
        if report is not None and REPORT in described:
            described[REPORT] |= {
                "seq": report.seq,
                "cpu_utilisation": report.cpu_utilisation,
                "transactions": report.transactions,
                "calls": report.calls,
                "capacity": report.capacity,
                "error": report.error,
            }
        return described

    def _counted(self, source: str, uri: str, now_ms: int) -> float | None:
        return counted(
            self._tracks.get((source, uri)),
            now_ms,
            self._settings.load.load_blackout_ms,
            self._settings.load.load_expiry_ms,
        )

    def _renew(self, source: str, uri: str, utilisation: float, now_ms: int) -> None:
        key = (source, uri)
        settings = self._settings
        self._tracks[key] = renew(
            self._tracks.get(key),
            utilisation,
            now_ms,
            settings.load.load_blackout_ms,
            settings.load.load_expiry_ms,
            settings.load.load_smoothing_tau_ms,
        )

    def accept(self, source: str, uri: str) -> None:
        """``source`` of ``uri`` was usable again: its next rejection is logged."""
        self._silenced.discard((source, uri))
