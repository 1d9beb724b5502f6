"""The routing table's encoding: what the sync loop writes, every SIP worker reads back."""

from __future__ import annotations

import json

import pytest

from counterpoise.core.routing_table import RoutingEntry, decode, encode

A, B = "sip:10.0.0.1:5060", "sip:10.0.0.2:5060"


def test_a_table_reads_back_as_written():
    table = [
        RoutingEntry(A, 0.25, queueing=True, inflight_limit=7, long_wait=False),
        RoutingEntry(B, 1.0, queueing=False, inflight_limit=0, long_wait=True, returning=True),
    ]
    assert decode(encode(table)) == table
    assert decode(encode([])) == []


def test_each_entry_names_its_fields_for_an_operator_reading_it():
    (fields,) = json.loads(encode([RoutingEntry(A, 0.5, True, 3, True)]))
    assert fields == {
        "uri": A,
        "weight": 0.5,
        "queueing": True,
        "inflight_limit": 3,
        "long_wait": True,
        "returning": False,
        "set_aside": False,
        "hold_limit": 0,
    }


def test_a_table_missing_a_field_is_refused():
    with pytest.raises(KeyError):
        decode(json.dumps([{"uri": A, "weight": 1.0, "queueing": True, "inflight_limit": 1}]))
