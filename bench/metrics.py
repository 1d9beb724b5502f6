"""What one SIPp caller measured, read from the files SIPp writes (``-trace_rtt``: one line
per answered call with its INVITE-to-200 time; ``-trace_stat``: counters every second), and
the arithmetic the report needs (percentiles, shares over time)."""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

SIPP_TRACE_ARGS = ("-trace_rtt", "-rtt_freq", "1", "-trace_stat", "-fd", "1")
"""Every answered call's response times, and the counters every second."""


@dataclasses.dataclass
class SippResult:
    start_epoch: float
    """When SIPp started (epoch seconds), the origin of its per-call times."""
    answered: list[tuple[float, float]]
    """(call start in epoch seconds, INVITE-to-200 in ms) of each answered call."""
    attempted: int
    successful: int
    failed: int
    retransmissions: int
    failures: list[tuple[float, int]]
    """(epoch seconds, calls that failed in the second before) from the periodic counters."""


def read_sipp(run_dir: Path, pid: int) -> SippResult:
    """The results of the SIPp UAC of process ``pid`` (uac.xml) that ran in ``run_dir``."""
    stats_path = run_dir / f"uac_{pid}_.csv"
    with open(stats_path, newline="") as stream:
        rows = list(csv.DictReader(stream, delimiter=";"))
    if not rows:
        raise ValueError(f"{stats_path} has no statistics")
    start_epoch = float(rows[0]["StartTime"].split("\t")[-1])
    last = rows[-1]
    failures = [
        (float(row["CurrentTime"].split("\t")[-1]), int(row["FailedCall(P)"])) for row in rows
    ]
    answered = []
    rtt_path = run_dir / f"uac_{pid}_rtt.csv"
    if rtt_path.exists():
        with open(rtt_path, newline="") as stream:
            for row in csv.DictReader(stream, delimiter=";"):
                if row.get("rtd_no") == "invite":
                    rtt_ms = float(row["response_time_ms"])
                    # Date_ms is when the 200 arrived, in ms since SIPp started.
                    start = start_epoch + (float(row["Date_ms"]) - rtt_ms) / 1000
                    answered.append((start, rtt_ms))
    return SippResult(
        start_epoch=start_epoch,
        answered=answered,
        attempted=int(last["OutgoingCall(C)"]),
        successful=int(last["SuccessfulCall(C)"]),
        failed=int(last["FailedCall(C)"]),
        retransmissions=int(last["Retransmissions(C)"]),
        failures=failures,
    )


def merge_sipp(results: Sequence[SippResult]) -> SippResult:
    """What several SIPp callers (one per balancer node) measured, as one caller's result."""
    return SippResult(
        start_epoch=min(r.start_epoch for r in results),
        answered=sorted(call for r in results for call in r.answered),
        attempted=sum(r.attempted for r in results),
        successful=sum(r.successful for r in results),
        failed=sum(r.failed for r in results),
        retransmissions=sum(r.retransmissions for r in results),
        failures=sorted(failure for r in results for failure in r.failures),
    )


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of a non-empty sequence."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def latency_summary(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return dict.fromkeys(("mean", "p50", "p95", "p99", "max"))
    return {
        "mean": sum(values) / len(values),
        "p50": percentile(values, 0.50),
        "p95": percentile(values, 0.95),
        "p99": percentile(values, 0.99),
        "max": max(values),
    }


def binned_percentile(
    calls: Sequence[tuple[float, float]], origin: float, end: float, bin_s: float, q: float
) -> list[tuple[float, float | None]]:
    """(bin middle in s since ``origin``, q-percentile of the calls started in the bin)."""
    bins: dict[int, list[float]] = {}
    for start, rtt in calls:
        bins.setdefault(int((start - origin) // bin_s), []).append(rtt)
    count = max(1, math.ceil((end - origin) / bin_s))
    return [
        ((index + 0.5) * bin_s, percentile(bins[index], q) if bins.get(index) else None)
        for index in range(count)
    ]


def windowed_shares(
    samples: Sequence[tuple[float, dict[str, int | None]]], window_s: float
) -> list[tuple[float, dict[str, float]]]:
    """Share of new INVITEs each proxy took in the ``window_s`` ending at each sample.

    ``samples`` are (seconds, cumulative count per proxy); a count of None (proxy stopped)
    or one that went down (proxy restarted) contributes what it can: the counts after it."""
    shares = []
    for index, (t, _) in enumerate(samples):
        first = next(i for i, (ts, _) in enumerate(samples) if ts >= t - window_s - 1e-9)
        if first == index:
            continue
        delta = increments(samples[first : index + 1])
        total = sum(delta.values())
        if total:
            shares.append((t, {name: count / total for name, count in delta.items()}))
    return shares


def increments(samples: Sequence[tuple[float, dict[str, int | None]]]) -> dict[str, int]:
    """New INVITEs per proxy over consecutive cumulative samples. A proxy not counted for a
    while (None: stopped) is compared with its last known count when it is counted again;
    a count that went down means the proxy restarted from zero."""
    total: dict[str, int] = {}
    last: dict[str, int] = {}
    for _, counts in samples:
        for name, now in counts.items():
            if now is None:
                continue
            if name in last:
                gained = now if now < last[name] else now - last[name]
                total[name] = total.get(name, 0) + gained
            else:
                total.setdefault(name, 0)
            last[name] = now
    return total
