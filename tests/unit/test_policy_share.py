"""The node's share of the pool alone: shares from what the nodes send, and the publication's
format."""

from __future__ import annotations

import pytest

from counterpoise.core.policy.share import (
    MAX_SENDS_BYTES,
    MIN_SHARE_OF_EQUAL,
    Sends,
    decode,
    encode,
    node_share,
)
from counterpoise.core.untrusted import BadRecord, untrusted

A, B = "sip:10.0.0.1:5060", "sip:10.0.0.2:5060"


def test_a_node_alone_has_the_whole_pool():
    alone = node_share({A: Sends(40.0, 3), B: Sends(10.0, 1)}, {})
    assert alone.share == 1.0
    assert alone.nodes == 1
    assert alone.shared_per_s(A) == 40.0
    assert alone.shared_per_s(B) == 10.0


def test_the_share_is_the_nodes_part_of_every_nodes_requests():
    peers = {"lb2": {A: Sends(60.0, 5), B: Sends(40.0, 2)}}
    mine = node_share({A: Sends(30.0, 2), B: Sends(20.0, 1)}, peers)
    assert mine.share == pytest.approx(50 / 150)
    assert mine.nodes == 2
    assert mine.pool_per_s == {A: 90.0, B: 60.0}
    assert mine.shared_per_s(A) == pytest.approx(30.0)


def test_the_share_is_taken_over_the_pool_not_per_proxy():
    # This node's requests to A are held and went to B: its share of A does not shrink.
    peers = {"lb2": {A: Sends(50.0, 5), B: Sends(50.0, 2)}}
    mine = node_share({A: Sends(10.0, 2), B: Sends(90.0, 1)}, peers)
    assert mine.share == pytest.approx(0.5)
    assert mine.shared_per_s(A) == pytest.approx(30.0)


def test_nodes_that_send_nothing_split_the_pool_equally():
    peers = {"lb2": {A: Sends(0.0, 0)}, "lb3": {}}
    assert node_share({A: Sends(0.0, 0)}, peers).share == pytest.approx(1 / 3)


def test_a_node_with_no_traffic_yet_keeps_a_floor():
    mine = node_share({A: Sends(0.0, 0)}, {"lb2": {A: Sends(100.0, 8)}})
    assert mine.share == pytest.approx(0.5 * MIN_SHARE_OF_EQUAL)


def test_a_peers_proxy_that_is_not_in_this_nodes_pool_is_left_out():
    mine = node_share({A: Sends(10.0, 1)}, {"lb2": {A: Sends(10.0, 1), B: Sends(80.0, 1)}})
    assert mine.pool_per_s == {A: 20.0}
    assert mine.share == pytest.approx(0.5)


def test_a_publication_reads_back():
    sends = {A: Sends(12.5, 3), B: Sends(0.0, 0)}
    assert decode(encode(sends).encode()) == sends


@pytest.mark.parametrize(
    "raw",
    [
        b"[1, 2]",
        b'{"sip:a": [1]}',
        b'{"sip:a": {"per_s": 1}}',
        b'{"sip:a": [-1, 0]}',
        b'{"sip:a": [1, -3]}',
        b'{"sip:a": [1e999, 0]}',
        b'{"sip:a": ["x", 0]}',
        b"not json",
        b"{" * 100_000,
    ],
)
def test_an_unusable_publication_is_a_bad_record(raw: bytes):
    with pytest.raises(BadRecord):
        untrusted(lambda: decode(raw))


def test_a_publication_over_the_bound_is_refused():
    big = b'{"sip:a": [1, 0], "pad": "' + b"x" * MAX_SENDS_BYTES + b'"}'
    with pytest.raises(BadRecord, match="bytes"):
        decode(big)
