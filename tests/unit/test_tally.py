"""Tally arithmetic and its shared-memory encoding."""

from __future__ import annotations

import dataclasses

import pytest

from counterpoise.core.attempts import is_proxy_failure
from counterpoise.core.tally import Tally

FULL = Tally(
    requests_ok=10,
    requests_failed=2,
    first_reply_ms_sum=123,
    final_reply_ms_sum=4567,
    probes_ok=5,
    probes_failed=1,
    probe_ms_sum=42,
    load_headers_rejected=3,
    load_samples=4,
    load_milli_sum=2500,
    late_replies=6,
    timeout_excess_ms_sum=700,
    trying_ms_sum=80,
)


def test_encode_is_space_separated_fields_in_order():
    assert FULL.encode() == "10 2 123 4567 5 1 42 3 4 2500 6 700 80"
    assert Tally().encode() == "0 0 0 0 0 0 0 0 0 0 0 0 0"


@pytest.mark.parametrize("tally", [Tally(), FULL, Tally(probe_ms_sum=2**40)])
def test_encode_decode_round_trip(tally):
    assert Tally.decode(tally.encode()) == tally


def test_decode_tolerates_surrounding_whitespace():
    assert Tally.decode("  10 2 123 4567 5 1 42 3 4 2500 6 700 80\n") == FULL


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1 2 3 4 5 6 7 8 9 10 11 12",  # too few fields
        "1 2 3 4 5 6 7 8 9 10 11 12 13 14",  # too many
        "1 2 3 4 5 6 7 8 9 10 11 12 -13",  # negative
        "-1 0 0 0 0 0 0 0 0 0 0 0 0",
        "1 2 3 4 5 6 7 8 9 10 11 12 x",  # not an integer
        "1 2 3 4 5 6 7 8 9 10 11 12 13.5",
        "garbage",
        "1,2,3,4,5,6,7",
    ],
)
def test_decode_rejects_garbage(text):
    with pytest.raises(ValueError):
        Tally.decode(text)


def test_add_and_subtract_field_by_field():
    one = Tally(1, 2, 3, 4, 5, 6, 7)
    two = Tally(10, 20, 30, 40, 50, 60, 70)
    assert one + two == Tally(11, 22, 33, 44, 55, 66, 77)
    assert two - one == Tally(9, 18, 27, 36, 45, 54, 63)
    assert (two - one) + one == two
    assert one - two == Tally(-9, -18, -27, -36, -45, -54, -63)


def test_derived_counts():
    assert FULL.samples == 10 + 2 + 5 + 1
    assert FULL.successes == 15
    assert FULL.failures == 3


def test_with_request_success_adds_latencies():
    tally = Tally().with_request(False, 7, 30).with_request(False, 3, 10)
    assert tally == Tally(requests_ok=2, first_reply_ms_sum=10, final_reply_ms_sum=40)


def test_with_request_counts_the_wait_for_100_trying_within_the_first_reply():
    tally = Tally().with_request(False, 120, 900, trying_ms=20).with_request(False, 100, 900)
    assert tally.trying_ms_sum == 20 and tally.first_reply_ms_sum == 220
    assert Tally().with_request(False, 50, 900, trying_ms=80).trying_ms_sum == 50


def test_with_request_failure_counts_without_latency():
    tally = Tally().with_request(True, 7, 30)
    assert tally == Tally(requests_failed=1)


def test_a_timeout_is_a_failure_charged_its_wait_beyond_the_penalty():
    assert Tally().with_timeout(4000, 500) == Tally(requests_failed=1, timeout_excess_ms_sum=3500)
    assert Tally().with_timeout(300, 500) == Tally(requests_failed=1)


def test_with_request_clamps_negative_times():
    assert Tally().with_request(False, -5, -1) == Tally(requests_ok=1)


def test_with_probe():
    tally = Tally().with_probe(False, 4).with_probe(True, 1500).with_probe(False, 6)
    assert tally == Tally(probes_ok=2, probes_failed=1, probe_ms_sum=10)
    assert Tally().with_probe(False, -3) == Tally(probes_ok=1)


def test_with_methods_do_not_mutate():
    before = dataclasses.replace(FULL)
    FULL.with_request(False, 1, 1)
    FULL.with_probe(True, 1)
    assert before == FULL


@pytest.mark.parametrize(
    ("status", "failure"),
    [
        (100, False),
        (180, False),
        (200, False),
        (302, False),
        (404, False),
        (407, False),
        (408, True),
        (486, False),
        (499, False),
        (500, True),
        (503, True),
        (599, True),
        (600, False),
        (603, False),
    ],
)
def test_is_proxy_failure(status, failure):
    assert is_proxy_failure(status) is failure


def test_a_difference_went_back_when_any_count_fell():
    later = Tally(requests_ok=5, probes_ok=2)
    assert not (later - Tally(requests_ok=3, probes_ok=2)).went_back
    assert (later - Tally(requests_ok=3, probes_ok=4)).went_back
    assert (Tally() - Tally(trying_ms_sum=1)).went_back
