"""Pool records read from Redis are checked one by one: a bad one is left out with its reason,
whatever it raises, and the rest of the pool is used (issue 11)."""

from __future__ import annotations

import json

import pytest

from counterpoise.core.pool import (
    MAX_BASE_WEIGHT,
    Admin,
    ProxyConfig,
    check_base_weight,
    parse_pool,
    parse_version,
)
from counterpoise.core.untrusted import BadRecord

GOOD = "sip:10.0.0.1:5060"
GOOD_RECORD = json.dumps({"weight": 2, "admin": "drained", "added_ms": 5})

BAD = {
    "sip:10.0.0.2:5060": '{"weight": 1, "added_ms": 1e999}',  # OverflowError
    "sip:10.0.0.3:5060": "[" * 600 + "]" * 600,  # deep nesting
    "sip:10.0.0.4:5060": '{"weight": 1e308}',  # prefix sums would overflow
    "sip:10.0.0.5:5060": '{"weight": "1"}',
    "sip:10.0.0.6:5060": '{"weight": 1, "admin": "gone"}',
    "sip:10.0.0.7:5060": '{"weight": 1, "added_ms": 1.5}',
    "sip:10.0.0.8:5060": "[1]",
    "sip:10.0.0.9:5060": b"\xff\xfe",
    "sip:10.0.0.10:5060": "x" * 5000,
    "sip:10.0.0.11:5060,sip:evil:5060": '{"weight": 1}',  # comma in the URI
    "sip:10.0.0.12:5060\r\nX-Evil: 1": '{"weight": 1}',  # CRLF in the URI
    "SIP:10.0.0.13:5060": '{"weight": 1}',  # not in normal form
    b"sip:\xff": '{"weight": 1}',
}


def test_every_bad_record_is_left_out_with_its_reason_and_the_good_one_kept():
    pool, rejected = parse_pool({GOOD: GOOD_RECORD, **BAD})
    assert pool == {GOOD: ProxyConfig(GOOD, 2.0, Admin.DRAINED, 5)}
    assert len(rejected) == len(BAD)
    assert all(reason for reason in rejected.values())


def test_a_bad_record_read_alone_raises_bad_record_only():
    for uri, text in BAD.items():
        if isinstance(uri, str):
            with pytest.raises(BadRecord):
                ProxyConfig.from_json(uri, text)


@pytest.mark.parametrize("weight", [0, -1, 1e308, float("inf"), float("nan"), True, "2", None])
def test_base_weight_bounds(weight):
    with pytest.raises(BadRecord):
        check_base_weight(weight)


def test_base_weight_upper_bound_is_accepted():
    assert check_base_weight(MAX_BASE_WEIGHT) == MAX_BASE_WEIGHT


@pytest.mark.parametrize(
    ("raw", "version"),
    [
        (None, 0),
        (b"7", 7),
        ("12", 12),
        (b"x", None),
        (b"1.5", None),
        (b"\xff", None),
        (b"9" * 30, None),
    ],
)
def test_pool_version(raw, version):
    assert parse_version(raw) == version
