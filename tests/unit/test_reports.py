"""Load reports: the msgpack round trip, every refused input with its reason, X-CP-Load."""

from __future__ import annotations

import dataclasses

import msgpack
import pytest

from counterpoise.core.reports import (
    FORMAT_VERSION,
    MAX_FUTURE_MS,
    BadReport,
    HeaderLoad,
    LoadReport,
    decode,
    encode,
    format_load_header,
    parse_load_header,
)

NOW = 1_700_000_000_000
FULL = LoadReport(
    proxy="sip:10.0.0.11:5060",
    seq=7,
    timestamp_ms=NOW,
    cpu_utilisation=0.25,
    cpu_percent=200.0,
    transactions=12,
    calls=3,
    capacity=80.0,
    processes=9,
    rss_bytes=123_456_789,
    error=None,
)
GOOD = msgpack.unpackb(encode(FULL))


def packed(**changes: object) -> bytes:
    """GOOD's wire map with keys replaced (or removed, for the value ``...``)."""
    data = {**GOOD, **changes}
    return msgpack.packb({k: v for k, v in data.items() if v is not ...})


def test_round_trip_full_and_minimal() -> None:
    assert decode(encode(FULL), NOW) == FULL
    minimal = LoadReport("sip:p", 0, NOW, error="no process named 'kamailio'")
    assert decode(encode(minimal), NOW) == minimal
    assert len(encode(FULL)) < 120


def test_wire_keys_are_the_documented_short_ones() -> None:
    assert GOOD == {
        "v": FORMAT_VERSION,
        "u": "sip:10.0.0.11:5060",
        "s": 7,
        "t": NOW,
        "c": 0.25,
        "cp": 200.0,
        "x": 12,
        "d": 3,
        "h": 80.0,
        "p": 9,
        "r": 123_456_789,
        "e": None,
    }


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xc1", "not msgpack"),
        (b"\x93\x01", "not msgpack"),
        (b"", "not msgpack"),
        (msgpack.packb([1, 2]), "not a map"),
        (msgpack.packb("hello"), "not a map"),
        (msgpack.packb({1: 2}), "not msgpack"),  # non-string key
        (b"\x00" * 5000, "larger than a report"),
        (packed(v=2), "format version 2"),
        (packed(v=...), "format version None"),
        (packed(u=...), "missing field 'u'"),
        (packed(t=...), "missing field 't'"),
        (packed(p=...), "missing field 'p'"),
        (packed(u=""), "proxy"),
        (packed(u=5), "proxy"),
        (packed(s="7"), "seq: expected an integer"),
        (packed(s=1.5), "seq: expected an integer"),
        (packed(s=True), "seq: expected an integer"),
        (packed(s=-1), "seq: -1 is negative"),
        (packed(x=-3), "transactions: -3 is negative"),
        (packed(d="x"), "calls: expected an integer"),
        (packed(r=-1), "rss_bytes: -1 is negative"),
        (packed(c=float("nan")), "cpu_utilisation: nan is not a finite number"),
        (packed(c=float("inf")), "cpu_utilisation: inf is not a finite number"),
        (packed(cp=float("-inf")), "cpu_percent: -inf is not a finite number"),
        (packed(c=50), "cpu_utilisation: 50.0 is above 1"),
        (packed(c=1.5), "above 1"),
        (packed(c=-0.1), "cpu_utilisation: -0.1 is negative"),
        (packed(c="high"), "cpu_utilisation: expected a number"),
        (packed(h=0), "capacity: must be > 0"),
        (packed(h=-5.0), "capacity: -5.0 is negative"),
        (packed(e=42), "error: must be a string"),
        (packed(t=NOW + MAX_FUTURE_MS + 1), f"{MAX_FUTURE_MS + 1} ms in the future"),
        (packed(t=NOW * 1000), "in the future"),  # microseconds by mistake
    ],
)
def test_bad_input_is_refused_with_its_reason(data: bytes, reason: str) -> None:
    with pytest.raises(BadReport, match=reason.replace("(", r"\(").replace(")", r"\)")):
        decode(data, NOW)


def test_not_bytes_is_refused() -> None:
    with pytest.raises(BadReport, match="expected bytes"):
        decode("a string", NOW)  # type: ignore[arg-type]


def test_bad_report_is_a_value_error() -> None:
    assert issubclass(BadReport, ValueError)


def test_edges_that_are_accepted() -> None:
    assert decode(packed(t=NOW + MAX_FUTURE_MS), NOW).timestamp_ms == NOW + MAX_FUTURE_MS
    assert decode(packed(t=0), NOW).timestamp_ms == 0  # old reports are the reader's call
    # jiffy rounding just over 1 is clamped, not refused
    assert decode(packed(c=1.02), NOW).cpu_utilisation == 1.0
    assert decode(packed(c=1, h=40), NOW).capacity == 40.0  # ints where floats go
    assert decode(packed(c=None, cp=None, x=None, d=None, h=None), NOW).transactions is None
    # unknown keys of a newer writer of the same version are ignored
    assert decode(packed(zz=1), NOW) == FULL


def test_constructor_checks_too_and_cuts_long_errors() -> None:
    with pytest.raises(BadReport, match="above 1"):
        LoadReport("sip:p", 0, NOW, cpu_utilisation=50.0)
    with pytest.raises(BadReport, match="negative"):
        dataclasses.replace(FULL, transactions=-1)
    long = LoadReport("sip:p", 0, NOW, error="x" * 10_000)
    assert long.error is not None and len(long.error) == 500
    assert decode(encode(long), NOW) == long


# --- X-CP-Load ---------------------------------------------------------------------------


def test_header_as_downstream_proxy_sends_it() -> None:
    assert parse_load_header("tx=12;workers=4;active=3") == HeaderLoad(12, 4, 3)
    assert parse_load_header("workers=1;busy=640") == HeaderLoad(workers=1, busy=640)
    assert parse_load_header(" tx = 0 ; workers=1 ") == HeaderLoad(tx=0, workers=1)
    assert parse_load_header("active=5") == HeaderLoad(active=5)


def test_header_unknown_keys_ignored() -> None:
    assert parse_load_header("tx=1;cpu=0.5;q=abc;workers=2") == HeaderLoad(tx=1, workers=2)
    assert parse_load_header("future=1") == HeaderLoad()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("garbage", "'garbage' is not key=value"),
        ("tx=1;;workers=2", "'' is not key=value"),
        ("tx=1;", "'' is not key=value"),
        ("=5", "not key=value"),
        ("tx=", "tx='' is not an integer"),
        ("tx=-1", "tx='-1' is not an integer >= 0"),
        ("tx=1.5", "not an integer"),
        ("tx=abc", "not an integer"),
        ("tx=²", "not an integer"),
        ("tx=1;tx=2", "tx given twice"),
        ("tx=1;" + "a=1;" * 100, "more than 256"),
    ],
)
def test_garbage_header_is_refused(value: str, reason: str) -> None:
    with pytest.raises(BadReport, match=reason):
        parse_load_header(value)


def test_header_format_and_back() -> None:
    assert format_load_header(12, 4, 3) == "tx=12;workers=4;active=3"
    assert format_load_header(tx=7) == "tx=7"
    assert format_load_header(workers=2, active=0) == "workers=2;active=0"
    assert format_load_header(1, 2, 0, 640) == "tx=1;workers=2;active=0;busy=640"
    loads = (HeaderLoad(1, 2, 3), HeaderLoad(tx=0), HeaderLoad(None, 4, None), HeaderLoad(busy=5))
    for load in loads:
        text = format_load_header(load.tx, load.workers, load.active, load.busy)
        assert parse_load_header(text) == load


@pytest.mark.parametrize("args", [(), (None, None, None), (-1,), (1.5,), (True,)])
def test_header_format_refuses_bad_counts(args: tuple) -> None:
    with pytest.raises(ValueError):
        format_load_header(*args)
