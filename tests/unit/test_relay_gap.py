"""``bench.relay_gap``'s reading of captured frames: which are the floating address's SIP
messages, and the relay-to-100 gap of each call."""

from __future__ import annotations

import socket

import pytest
from bench import relay_gap

VIP = "10.231.77.100"


def frame(source: str, payload: bytes, protocol: int = 17) -> bytes:
    """An Ethernet frame of an IPv4 packet (a 20-byte header) with a UDP header."""
    ip = bytes([0x45, 0, 0, 0, 0, 0, 0, 0, 64, protocol, 0, 0])
    ip += socket.inet_aton(source) + socket.inet_aton("10.231.77.1")
    return bytes(12) + b"\x08\x00" + ip + bytes(8) + payload


INVITE = b"INVITE sip:bob@x SIP/2.0\r\nVia: SIP/2.0/UDP x\r\nCall-ID: c1\r\n\r\n"


@pytest.mark.parametrize(
    ("captured", "expected"),
    [
        (frame(VIP, INVITE), (b"INVITE sip:bob@x SIP/2.0", b"c1")),
        (frame(VIP, b"SIP/2.0 100 Trying\r\ni: c2\r\n\r\n"), (b"SIP/2.0 100 Trying", b"c2")),
        (frame("10.231.77.1", INVITE), None),  # another sender
        (frame(VIP, INVITE, protocol=6), None),  # not UDP
        (frame(VIP, b"OPTIONS sip:x SIP/2.0\r\n\r\n"), None),  # no Call-ID
        (frame(VIP, INVITE)[:30], None),  # cut short
    ],
)
def test_only_the_addresses_sip_messages_are_read(captured: bytes, expected: object):
    assert relay_gap.sip_sent_by(captured, VIP) == expected


def test_each_call_is_timed_from_its_first_invite_to_its_first_100():
    packets = [
        (1.0, b"INVITE sip:a SIP/2.0", b"a"),
        (1.0002, b"SIP/2.0 100 Trying", b"a"),
        (1.0005, b"SIP/2.0 100 Trying", b"a"),  # seen again on the bridge
        (2.0, b"SIP/2.0 100 Trying", b"b"),  # a 100 before any relay: no gap
        (2.1, b"INVITE sip:b SIP/2.0", b"b"),
        (3.0, b"INVITE sip:c SIP/2.0", b"c"),  # the node died before its 100
        (3.5, b"SIP/2.0 200 OK", b"c"),
    ]
    assert relay_gap.gaps_s(packets) == pytest.approx([0.0002])
