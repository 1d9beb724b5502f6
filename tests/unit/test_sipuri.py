"""Validation and normalisation of proxy URIs."""

from __future__ import annotations

import pytest

from counterpoise.core.sipuri import InvalidProxyUri, parse_proxy_uri


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sip:127.0.0.1:5071", "sip:127.0.0.1:5071"),
        ("sip:proxy.example.com", "sip:proxy.example.com"),
        ("sips:[::1]:5061;transport=tls", "sips:[::1]:5061;transport=tls"),
        ("sip:10.0.0.5:5060;transport=tcp", "sip:10.0.0.5:5060;transport=tcp"),
        ("sip:[2001:DB8::1]", "sip:[2001:db8::1]"),
        ("sip:Proxy.Example.COM:5060", "sip:proxy.example.com:5060"),
        ("sips:HOST", "sips:host"),
        ("  sip:proxy1:5060\n", "sip:proxy1:5060"),
        ("sip:p:1", "sip:p:1"),
        ("sip:p:65535", "sip:p:65535"),
    ],
)
def test_accepts_and_normalises(text, expected):
    assert parse_proxy_uri(text) == expected


def test_normalised_uri_is_a_fixed_point():
    once = parse_proxy_uri("sips:[::ABCD]:5061;transport=tls")
    assert once == "sips:[::abcd]:5061;transport=tls"
    assert parse_proxy_uri(once) == once


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("SIP:Proxy.Example.COM:5060", "sip:proxy.example.com:5060"),
        ("Sips:[::1]:5061", "sips:[::1]:5061"),
    ],
)
def test_scheme_case_is_normalised(text, expected):
    # RFC 3261 19.1.4: the scheme is case-insensitive, and parse_proxy_uri lower-cases it
    # (``match.group("scheme").lower()``), so an upper-case scheme must be accepted.
    assert parse_proxy_uri(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "127.0.0.1:5060",  # no scheme
        "proxy.example.com",
        "sip:alice@host",  # user part
        "sip:alice@127.0.0.1:5060",
        "sip:host:70000",  # port out of range
        "sip:host:0",
        "sip:host:123456",
        "sip:host:",
        "http://x",
        "tel:+12345",
        "",
        "   ",
        "sip:",
        "sip:[::1",
        "sip:[1:2:3:4:5:6:7:8:9]",  # not an IPv6 address
        "sip:-host",
        "sip:host name",
        "sip:host;transport=tls?x=1",
    ],
)
def test_rejects(text):
    with pytest.raises(InvalidProxyUri):
        parse_proxy_uri(text)


def test_error_is_a_value_error_with_the_expected_form():
    with pytest.raises(ValueError, match=r"sip:HOST\[:PORT\]"):
        parse_proxy_uri("sip:alice@host")
    with pytest.raises(InvalidProxyUri, match="out of range"):
        parse_proxy_uri("sip:host:70000")
