"""The balancer's SIP sockets as operators write them (Kamailio's PROTO:HOST:PORT)."""

from __future__ import annotations

import pytest

from counterpoise.core.sockets import InvalidSocket, ListenSocket, parse_socket, parse_sockets


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:5060", ListenSocket("udp", "127.0.0.1", 5060)),  # bare: UDP, as before
        ("TCP:10.0.0.2:5060", ListenSocket("tcp", "10.0.0.2", 5060)),
        ("tls:sip.example.com:5061", ListenSocket("tls", "sip.example.com", 5061)),
        ("[::1]:5999", ListenSocket("udp", "[::1]", 5999)),
        ("tcp:[2001:DB8:0::2]:5060", ListenSocket("tcp", "[2001:db8::2]", 5060)),
    ],
)
def test_socket_forms(text: str, expected: ListenSocket) -> None:
    assert parse_socket(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nonsense", "expected [PROTO:]HOST:PORT"),
        ("::1:5060", "expected [PROTO:]HOST:PORT"),  # IPv6 needs brackets
        ("sctp:127.0.0.1:5060", "is not one of udp, tcp, tls"),
        ("udp:127.0.0.1:70000", "out of range"),
        ("[fe80::1::2]:5060", "not an IPv6 address"),
    ],
)
def test_bad_sockets_say_what_was_expected(text: str, message: str) -> None:
    with pytest.raises(InvalidSocket, match=message.replace("[", r"\[")):
        parse_socket(text)


def test_a_list_refuses_twins() -> None:
    assert len(parse_sockets("udp:127.0.0.1:5060, tcp:127.0.0.1:5060")) == 2
    with pytest.raises(InvalidSocket, match="twice"):
        parse_sockets("127.0.0.1:5060,udp:127.0.0.1:5060")


def test_kamailio_form_and_uri() -> None:
    tcp6 = ListenSocket("tcp", "[::1]", 5070)
    assert tcp6.kamailio() == "tcp:[::1]:5070"
    assert tcp6.kamailio("203.0.113.5") == "tcp:[::1]:5070/203.0.113.5:5070"
    assert tcp6.kamailio("203.0.113.5:5080") == "tcp:[::1]:5070/203.0.113.5:5080"
    assert tcp6.uri("counterpoise") == "sip:counterpoise@[::1]:5070;transport=tcp"
    assert tcp6.address == "::1" and tcp6.is_ipv6
    assert ListenSocket("udp", "127.0.0.1", 5060).uri() == "sip:127.0.0.1:5060"
