"""The stray reply's proof (``core.stray``): a reply that matches no transaction is forwarded
only to where the request it answers came from, by a signature of this pool's keys."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from counterpoise.core import stray

from .test_dialog_seal import nested_mac

SECRET = bytes(range(32))
KEYS = {"1": SECRET}
CALLER = stray.Upstream("udp", "198.51.100.7", 5062, "z9hG4bK-caller-1")


def signature(upstream: stray.Upstream = CALLER, call_id: str = "call-1@x") -> str:
    return stray.signed("1", SECRET, call_id, 7, "INVITE", upstream)


def verifies(param: str | None, upstream: stray.Upstream | None = CALLER, **ids: str) -> bool:
    values = {"call_id": "call-1@x", "cseq": "7", "method": "INVITE"} | ids
    return stray.verifies(
        param, values["call_id"], values["cseq"], values["method"], upstream, KEYS.get
    )


def test_a_reply_to_where_the_request_came_from_verifies():
    assert signature().startswith("1.")
    assert verifies(signature())


@pytest.mark.parametrize(
    "other",
    [
        stray.Upstream("udp", "203.0.113.66", 5062, "z9hG4bK-caller-1"),
        stray.Upstream("udp", "198.51.100.7", 5063, "z9hG4bK-caller-1"),
        stray.Upstream("tcp", "198.51.100.7", 5062, "z9hG4bK-caller-1"),
        stray.Upstream("udp", "198.51.100.7", 5062, "z9hG4bK-victim"),
    ],
)
def test_another_next_hop_does_not_verify(other: stray.Upstream):
    assert not verifies(signature(), other)


@pytest.mark.parametrize(
    "ids",
    [{"call_id": "call-2@x"}, {"cseq": "8"}, {"method": "BYE"}, {"cseq": "x"}, {"cseq": "²"}],
)
def test_another_transaction_does_not_verify(ids: dict[str, str]):
    assert not verifies(signature(), **ids)


@pytest.mark.parametrize(
    "param",
    [None, "", "1", "1.", "2." + "A" * 22, "x.abc", "1." + "A" * 22, "1." + "A" * 100],
)
def test_a_missing_or_forged_signature_does_not_verify(param: str | None):
    assert not verifies(param)


def test_no_next_hop_does_not_verify():
    assert not verifies(signature(), None)


def test_the_next_via_is_read_as_kamailio_forwards_by_it():
    """``received`` before the sent-by host, ``rport`` before the sent-by port, then the
    transport's default port; hosts compared without brackets or case."""
    read = stray.reply_upstream
    assert read("UDP", "10.9.9.9", "5099", "198.51.100.7", "5062", "b") == stray.Upstream(
        "udp", "198.51.100.7", 5062, "b"
    )
    assert read("UDP", "198.51.100.7", "5062", None, "", "b") == stray.Upstream(
        "udp", "198.51.100.7", 5062, "b"
    )
    assert read("UDP", "Host.Example", None, None, None, "b") == stray.Upstream(
        "udp", "host.example", 5060, "b"
    )
    assert read("TLS", "[2001:DB8::1]", None, None, None, "b") == stray.Upstream(
        "tls", "2001:db8::1", 5061, "b"
    )
    assert read("UDP", "198.51.100.7", "²", None, "²", "b") == stray.Upstream(
        "udp", "198.51.100.7", 5060, "b"
    )  # digits Python reads as digits, SIP does not: the default port
    assert read("UDP", None, "5060", None, None, "b") is None
    assert read("UDP", "198.51.100.7", "5060", None, None, None) is None


def test_a_cseq_number_is_plain_digits():
    assert stray.cseq_number("7") == 7
    assert [stray.cseq_number(text) for text in (None, "", "x", "²", "1" * 11)] == [None] * 5


def test_the_requests_upstream_is_its_source():
    assert stray.request_upstream("udp", "198.51.100.7", 5062, "z9hG4bK-caller-1") == CALLER
    assert stray.request_upstream("udp", "198.51.100.7", 5062, "") is None
    assert stray.request_upstream("udp", "198.51.100.7", 0, "b") is None


FIELDS = [b"call-1@x", b"7 INVITE", b"udp", b"198.51.100.7", b"5062", b"z9hG4bK-caller-1"]
CHECK = ("call-1@x", "7", "INVITE", CALLER, KEYS.get)


def test_the_signature_is_what_a_kamailio_config_computes():
    """``dialog_seal.native_mac``'s steps (its tests check them), under this purpose."""
    message = b"cps3" + b"".join(str(len(f)).encode() + b":" + f for f in FIELDS)
    assert signature() == "1." + nested_mac(message, SECRET)


def signature_v2() -> str:
    """``cps2``: crypto's HMAC keyed with the secret's hex text, 22 characters of base64."""
    message = b"cps2" + b"".join(str(len(f)).encode() + b":" + f for f in FIELDS)
    digest = hmac.new(SECRET.hex().encode(), message, hashlib.sha256).digest()
    return "1." + base64.urlsafe_b64encode(digest).decode()[:22]


def signature_v1() -> str:
    """``cps``: HMAC keyed with the secret's bytes over 4-byte length-prefixed fields."""
    message = b"cps1" + b"".join(len(f).to_bytes(4, "big") + f for f in FIELDS)
    mac = hmac.new(SECRET, message, hashlib.sha256).digest()[:16]
    return "1." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


@pytest.mark.parametrize(
    ("version", "old"),
    [(stray.STRAY_PARAM_V2, signature_v2()), (stray.STRAY_PARAM_V1, signature_v1())],
)
def test_a_signature_of_a_version_before_still_verifies(version: str, old: str):
    """A reply to a request an old node relayed during an upgrade (one upgrade or two)."""
    assert stray.verifies(old, *CHECK, version=version)
    assert not stray.verifies(old, *CHECK)  # each version under its own name
    assert not stray.verifies(signature(), *CHECK, version=version)
