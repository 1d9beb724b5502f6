"""Load reports: what a proxy's own host says about its load, and the ``X-CP-Load`` header.

Pure module (no Redis, no Kamailio): ``counterpoise-agent`` (``agent.py``) builds a
``LoadReport`` per interval and stores ``encode(report)`` in Redis; whoever reads it calls
``decode`` and gets either a checked report or ``BadReport`` saying what was wrong.

Wire format: a msgpack map with short string keys (a report is written every second per proxy,
so the keys are kept short):

====  ===================  ============================================================
key   field                type and meaning
====  ===================  ============================================================
v     (format version)     int, ``FORMAT_VERSION``; another version is rejected
u     proxy                str, the proxy's SIP URI as entered in the pool
s     seq                  int >= 0, +1 per report; an agent starts it at its start time
                           in epoch ms, so it grows across restarts too and the
                           balancer can refuse a replayed (not newer) report
t     timestamp_ms         int, epoch milliseconds when the agent measured
c     cpu_utilisation      float in [0, 1] or nil: CPU time of the proxy's processes over
                           wall time, divided by the cores the proxy may use; nil on the
                           first report (no previous sample) or when no process was found
cp    cpu_percent          float >= 0 or nil: the same, undivided, in percent of one core
                           (``top`` style: 250 = two and a half cores busy)
x     transactions         int >= 0 or nil: SIP transactions in progress in the proxy
d     calls                int >= 0 or nil: calls (dialogs) in progress, nil if unknown
h     capacity             float > 0 or nil: operator's hint of how many transactions the
                           proxy can work on at once (``--capacity``), nil if not given
p     processes            int >= 0: processes of the proxy found on the host
r     rss_bytes            int >= 0: sum of their resident set sizes (shared pages are
                           counted once per process, so this over-states a forking server)
e     error                str or nil: why the proxy could not be (fully) queried
====  ===================  ============================================================
"""

from __future__ import annotations

import dataclasses
import math

import msgpack

from counterpoise.core.untrusted import BadRecord, untrusted

FORMAT_VERSION = 1
"""Version of the wire map; bumped on any incompatible change so an old reader refuses a new
report with a clear reason instead of misreading it."""

MAX_FUTURE_MS = 5_000
"""A report may be stamped at most this many milliseconds after the reader's clock. Hosts run
NTP, so a few ms of skew is normal; 5 s allows a badly synced host, while a report from
further in the future (a wrong clock, a unit mix-up: seconds or microseconds) is refused, since
it would look fresh for ever."""

MAX_REPORT_BYTES = 4096
"""Largest encoded report accepted. A real one is about 100 bytes (the URI and an error text
dominate); anything much larger is not a report and is refused before msgpack parses it."""

MAX_ERROR_CHARS = 500
"""``error`` is cut to this many characters by ``LoadReport`` (enough for a command's stderr
line or an exception text, small enough to keep reports far under ``MAX_REPORT_BYTES``)."""

CPU_SLACK = 0.05
"""``cpu_utilisation`` up to 1 + this is accepted by ``decode`` (and clamped to 1): jiffy
rounding of two samples 1 s apart can make a saturated proxy read 1.01. Beyond it the writer
mixed units (50 meaning 50 %), and the report is refused."""

MAX_HEADER_CHARS = 256
"""Longest ``X-CP-Load`` value parsed; ours is about 30 characters."""

LOAD_REQUEST_HEADER = "X-CP-Load-Request"
"""Header of a request asking the proxy for its ``X-CP-Load`` (value ``1``): on the balancer's
probes and on every request it relays. A proxy states its load only in replies to requests
that asked (``downstream/x-cp-load.cfg``), so nobody else learns it."""

HEADER_KEYS = ("tx", "workers", "active", "busy")
"""Keys of ``X-CP-Load`` understood (downstream/x-cp-load.cfg): ``tx`` transactions in tm's
table (including those in the 5 s wait state), ``workers`` SIP worker processes, ``active``
transactions really in progress, ``busy`` the workers' time spent on requests over the latest
second, per mille. Other keys are ignored, so a proxy may add some."""


class BadReport(BadRecord):
    """A report or header that cannot be used; the message says why."""


@dataclasses.dataclass(frozen=True)
class LoadReport:
    proxy: str
    """SIP URI of the proxy, as in the pool (``sip:10.0.0.11:5060``)."""
    seq: int
    """Sequence number, +1 per report, from the agent's start time in epoch ms."""
    timestamp_ms: int
    """Epoch milliseconds of the measurement."""
    cpu_utilisation: float | None = None
    """Fraction [0, 1] of the CPU the proxy's processes may use that they used."""
    cpu_percent: float | None = None
    """Raw CPU use in percent of one core (may exceed 100 on several cores)."""
    transactions: int | None = None
    """SIP transactions in progress, from the proxy itself."""
    calls: int | None = None
    """Calls (dialogs) in progress, if the proxy tracks them."""
    capacity: float | None = None
    """Operator's hint of the transactions the proxy can work on at once, if any."""
    processes: int = 0
    """Processes of the proxy found on the host; 0 means it is not running."""
    rss_bytes: int = 0
    """Sum of the resident memory of those processes, bytes."""
    error: str | None = None
    """Why the proxy could not be (fully) queried; None when everything was measured."""

    def __post_init__(self) -> None:
        _check(self)


_KEYS = {
    "proxy": "u",
    "seq": "s",
    "timestamp_ms": "t",
    "cpu_utilisation": "c",
    "cpu_percent": "cp",
    "transactions": "x",
    "calls": "d",
    "capacity": "h",
    "processes": "p",
    "rss_bytes": "r",
    "error": "e",
}
_REQUIRED = ("proxy", "seq", "timestamp_ms", "processes", "rss_bytes")


def _check(report: LoadReport) -> None:
    """Raise BadReport unless every field has its type and range."""
    if not isinstance(report.proxy, str) or not report.proxy:
        raise BadReport("proxy: must be a non-empty string")
    for name in ("seq", "timestamp_ms", "processes", "rss_bytes"):
        _int(name, getattr(report, name), optional=False)
    for name in ("transactions", "calls"):
        _int(name, getattr(report, name), optional=True)
    _float("cpu_percent", report.cpu_percent)
    util = _float("cpu_utilisation", report.cpu_utilisation)
    if util is not None and util > 1 + CPU_SLACK:
        raise BadReport(f"cpu_utilisation: {util} is above 1 (a fraction, not a percentage)")
    if util is not None and util > 1:
        object.__setattr__(report, "cpu_utilisation", 1.0)
    capacity = _float("capacity", report.capacity)
    if capacity == 0:
        raise BadReport("capacity: must be > 0 (or absent)")
    if report.error is not None:
        if not isinstance(report.error, str):
            raise BadReport("error: must be a string or absent")
        if len(report.error) > MAX_ERROR_CHARS:
            object.__setattr__(report, "error", report.error[: MAX_ERROR_CHARS - 3] + "...")


def _int(name: str, value: object, optional: bool) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadReport(f"{name}: expected an integer, got {type(value).__name__}")
    if value < 0:
        raise BadReport(f"{name}: {value} is negative")
    return value


def _float(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadReport(f"{name}: expected a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise BadReport(f"{name}: {value} is not a finite number")
    if value < 0:
        raise BadReport(f"{name}: {value} is negative")
    return float(value)


def encode(report: LoadReport) -> bytes:
    """The msgpack bytes of ``report`` (see the module's table)."""
    data: dict[str, object] = {"v": FORMAT_VERSION}
    for field, key in _KEYS.items():
        data[key] = getattr(report, field)
    packed: bytes = msgpack.packb(data, use_bin_type=True)
    return packed


def decode(data: bytes, now_ms: int) -> LoadReport:
    """The report in ``data``, checked; ``BadRecord`` with the reason if it is not one.

    ``now_ms`` is the reader's epoch-ms clock, to refuse reports stamped in the future.
    """
    return untrusted(lambda: _decode(data, now_ms))


def _decode(data: bytes, now_ms: int) -> LoadReport:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise BadReport(f"expected bytes, got {type(data).__name__}")
    if len(data) > MAX_REPORT_BYTES:
        raise BadReport(f"larger than a report ({MAX_REPORT_BYTES} bytes max)")
    try:
        raw = msgpack.unpackb(bytes(data), raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as error:
        raise BadReport(f"not msgpack: {error or type(error).__name__}") from None
    if not isinstance(raw, dict):
        raise BadReport(f"not a map: msgpack {type(raw).__name__}")
    version = raw.get("v")
    if version != FORMAT_VERSION:
        raise BadReport(f"format version {version!r}, expected {FORMAT_VERSION}")
    fields = {}
    for field, key in _KEYS.items():
        if key in raw:
            fields[field] = raw[key]
        elif field in _REQUIRED:
            raise BadReport(f"missing field {key!r} ({field})")
    try:
        report = LoadReport(**fields)
    except TypeError as error:  # a float where an int is needed is a BadReport, from _check
        raise BadReport(str(error)) from None
    if report.timestamp_ms > now_ms + MAX_FUTURE_MS:
        ahead = report.timestamp_ms - now_ms
        raise BadReport(f"timestamp_ms is {ahead} ms in the future (max {MAX_FUTURE_MS})")
    return report


# --- X-CP-Load ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HeaderLoad:
    """The values of one ``X-CP-Load`` header; None for a key it did not carry."""

    tx: int | None = None
    workers: int | None = None
    active: int | None = None
    busy: int | None = None


def parse_load_header(value: str) -> HeaderLoad:
    """``tx=12;workers=4;active=3;busy=640`` -> ``HeaderLoad(12, 4, 3, 640)``.

    Parts are ``key=value`` separated by ``;`` (spaces around them allowed). Known keys
    (``HEADER_KEYS``) need an integer >= 0 and may appear once; unknown keys are ignored
    whatever their value. Anything else (no ``=``, empty key, a bad number, an empty or
    over-long header) raises ``BadReport``.
    """
    if not isinstance(value, str):
        raise BadReport(f"X-CP-Load: expected a string, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise BadReport("X-CP-Load: empty")
    if len(text) > MAX_HEADER_CHARS:
        raise BadReport(f"X-CP-Load: {len(text)} characters, more than {MAX_HEADER_CHARS}")
    values: dict[str, int] = {}
    for part in text.split(";"):
        key, sep, number = (s.strip() for s in part.partition("="))
        if not sep or not key:
            raise BadReport(f"X-CP-Load: {part.strip()!r} is not key=value")
        if key not in HEADER_KEYS:
            continue
        if key in values:
            raise BadReport(f"X-CP-Load: {key} given twice")
        if not number.isascii() or not number.isdigit():
            raise BadReport(f"X-CP-Load: {key}={number!r} is not an integer >= 0")
        values[key] = int(number)
    return HeaderLoad(**values)


def format_load_header(
    tx: int | None = None,
    workers: int | None = None,
    active: int | None = None,
    busy: int | None = None,
) -> str:
    """The ``X-CP-Load`` value for the given counts, in ``HEADER_KEYS`` order, None ones left
    out: ``format_load_header(12, 4, 3) == "tx=12;workers=4;active=3"``."""
    parts = []
    for key, count in zip(HEADER_KEYS, (tx, workers, active, busy), strict=True):
        if count is None:
            continue
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"{key}: {count!r} is not an integer >= 0")
        parts.append(f"{key}={count}")
    if not parts:
        raise ValueError("X-CP-Load needs at least one value")
    return ";".join(parts)
