"""The edge's pure trust rules (core/edge.py): direction, limits, record bounds."""

from __future__ import annotations

import re

import pytest

from counterpoise.core import edge

PROXY = ("10.0.0.11", 5060)
POOL = frozenset({PROXY, ("10.0.0.12", 5070)})
CALLER = ("203.0.113.9", 5060)
GATEWAY = ("198.51.100.1", 5060)


@pytest.mark.parametrize(
    ("uri", "hop"),
    [
        ("sip:10.0.0.11", ("10.0.0.11", 5060)),
        ("sips:10.0.0.11", ("10.0.0.11", 5061)),
        ("SIP:Proxy.Example.COM:5080;transport=udp", ("proxy.example.com", 5080)),
        ("sip:+1900@198.51.100.1:5062;lr", ("198.51.100.1", 5062)),
        ("sip:[2001:db8::1]:5060", ("2001:db8::1", 5060)),
        ("tel:+1900", None),
    ],
)
def test_uri_hop_is_the_host_and_port_a_request_goes_to(uri: str, hop: object) -> None:
    assert edge.uri_hop(uri) == hop


def test_pool_hops_resolve_names_once_and_keep_addresses_as_they_are() -> None:
    asked: list[str] = []

    def resolve(host: str) -> list[str]:
        asked.append(host)
        return ["10.0.0.20"]

    hops = edge.pool_hops(["sip:10.0.0.11", "sip:px.example.com:5070", "garbage"], resolve)
    assert hops["sip:10.0.0.11"] == {PROXY}
    assert hops["sip:px.example.com:5070"] == {("px.example.com", 5070), ("10.0.0.20", 5070)}
    assert hops["garbage"] == frozenset()
    assert asked == ["px.example.com"]


def test_over_a_connection_a_pool_proxy_is_known_by_its_address_alone() -> None:
    ephemeral = ("10.0.0.11", 41234)  # a TCP connection the proxy opened
    assert edge.from_pool(ephemeral, True, POOL)
    assert not edge.from_pool(ephemeral, False, POOL)  # over UDP it sends from its socket
    assert not edge.from_pool(("10.0.0.99", 5060), True, POOL)


def test_trusted_upstreams_parse_addresses_and_networks_of_both_families() -> None:
    networks = edge.parse_networks(" 10.0.0.0/24, 192.0.2.7,,2001:db8::/32,[2001:db8:1::5] ")
    assert [str(network) for network in networks] == [
        "10.0.0.0/24", "192.0.2.7/32", "2001:db8::/32", "2001:db8:1::5/128"
    ]  # fmt: skip
    assert edge.parse_networks("") == ()


@pytest.mark.parametrize("bad", ["10.0.0.300", "10.0.0.5/24", "example.com", "10.0.0.0/33"])
def test_a_bad_trusted_upstream_is_named(bad: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        edge.parse_networks(f"192.0.2.7,{bad}")


def test_only_bounded_values_are_recorded() -> None:
    assert edge.recordable("a" * 256, 256)
    assert not edge.recordable("a" * 257, 256)
    assert not edge.recordable("", 256)
