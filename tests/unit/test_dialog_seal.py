"""The seal of the balancer's Record-Route: only a dialog the balancer made passes, each way
to where the seal says, whatever a request's Route, tags, transport or Call-ID hold."""

from __future__ import annotations

import base64
import hashlib
import hmac
import random

import pytest

from counterpoise.core import dialog_seal
from counterpoise.core.dialog_seal import DialogKey, Direction, Request, Seal
from counterpoise.core.untrusted import BadRecord

SECRET = bytes(range(32))
OTHER_SECRET = bytes(range(1, 33))
KEYS = {"1": SECRET}
PROXY = dialog_seal.proxy_hop("sip:10.0.0.11:5060")
CALLER = dialog_seal.caller_hop("udp", "198.51.100.7", 5062)
POOL = frozenset({("10.0.0.11", 5060), ("10.0.0.12", 5060)})
OUTSIDE = dialog_seal.proxy_hop("sip:203.0.113.50")
SEAL = Seal("call-1", "ftag-1", PROXY, CALLER)  # type: ignore[arg-type]


def route(seal: Seal = SEAL, key_id: str = "1", secret: bytes = SECRET) -> str:
    params = dialog_seal.record_route_params(key_id, secret, seal)
    return f"sip:192.0.2.1;lr;ftag={seal.from_tag}{params}"


def admit(route_uri: str, **kw: object) -> dialog_seal.Hop | None:
    fields: dict[str, object] = {
        "route_uri": route_uri,
        "call_id": "call-1",
        "from_tag": "ftag-1",
        "to_tag": "callee",
        "source": ("198.51.100.7", 5062),
        "stream": False,
    } | kw
    return dialog_seal.admit(Request(**fields), KEYS.get, POOL, lambda hop: frozenset())  # type: ignore[arg-type]


def test_hops_read_from_proxy_uris_keep_transport_and_scheme() -> None:
    assert dialog_seal.proxy_hop("sip:10.0.0.11") == dialog_seal.Hop(
        "sip", "udp", "10.0.0.11", 5060
    )
    tcp = dialog_seal.proxy_hop("sip:PX.example:5070;transport=TCP")
    assert tcp == dialog_seal.Hop("sip", "tcp", "px.example", 5070)
    assert tcp is not None and tcp.uri() == "sip:px.example:5070;transport=tcp"
    sips = dialog_seal.proxy_hop("sips:[2001:db8::1]")
    assert sips == dialog_seal.Hop("sips", "tls", "2001:db8::1", 5061)
    assert sips is not None and sips.sealed() == "sips:tls:[2001:db8::1]:5061"
    assert dialog_seal.proxy_hop("sip:x;transport=carrier-pigeon") is None
    assert dialog_seal.proxy_hop("tel:+1555") is None


def test_the_callers_requests_go_to_the_sealed_proxy_on_its_transport() -> None:
    assert admit(route(SEAL)) == PROXY
    assert PROXY is not None and PROXY.uri() == "sip:10.0.0.11:5060;transport=udp"


def test_the_callees_requests_come_from_the_sealed_proxy_and_go_to_the_caller() -> None:
    callee = {"from_tag": "callee", "to_tag": "ftag-1"}
    assert admit(route(), source=("10.0.0.11", 5060), **callee) == CALLER
    assert admit(route(), source=("10.0.0.11", 40000), stream=True, **callee) == CALLER
    assert admit(route(), source=("10.0.0.12", 5060), **callee) is None  # another pool proxy
    assert admit(route(), source=("198.51.100.7", 5062), **callee) is None  # the caller itself


def test_a_callers_request_from_the_pool_is_refused() -> None:
    """A route set bounced through a pool proxy comes back from the pool as the caller's."""
    assert admit(route(), source=("10.0.0.11", 5060)) is None
    assert admit(route(), source=("10.0.0.11", 40000), stream=True) is None


def test_a_caller_on_a_proxys_host_is_still_the_caller() -> None:
    """Over TCP a proxy is known by its host alone; the caller's own address is the caller."""
    on_proxy_host = dialog_seal.caller_hop("tcp", "10.0.0.11", 40000)
    seal = Seal("call-1", "ftag-1", PROXY, on_proxy_host)  # type: ignore[arg-type]
    assert admit(route(seal), source=("10.0.0.11", 40000), stream=True) == PROXY
    assert admit(route(seal), source=("10.0.0.11", 40001), stream=True) is None


@pytest.mark.parametrize(
    "change",
    [
        {"call_id": "call-2"},
        {"from_tag": "other", "to_tag": "callee"},
        {"from_tag": "callee", "to_tag": "other"},
    ],
)
def test_another_dialogs_request_is_refused(change: dict[str, str]) -> None:
    assert admit(route(), **change) is None


def test_a_seal_edited_or_signed_with_an_unknown_key_is_refused() -> None:
    good = route()
    assert admit(good.replace("cpp=sip:udp", "cpp=sip:tcp")) is None
    assert admit(good.replace("cpp=sip:", "cpp=sips:")) is None
    assert admit(good.replace("cpc=udp:198.51.100.7", "cpc=udp:203.0.113.9")) is None
    assert admit(good.replace("ftag=ftag-1", "ftag=ftag-2")) is None
    assert admit(route(key_id="2")) is None
    assert admit(route(secret=OTHER_SECRET)) is None
    assert admit("sip:192.0.2.1;lr") is None
    assert admit("sip:192.0.2.1;lr;ftag=ftag-1;cpd3=1.x;cpp=sip:udp:10.0.0.11:5060") is None


def test_direction_is_told_by_whose_tag_is_sealed() -> None:
    assert dialog_seal.direction(SEAL, "ftag-1", "x") == Direction.TO_CALLEE
    assert dialog_seal.direction(SEAL, "x", "ftag-1") == Direction.TO_CALLER
    assert dialog_seal.direction(SEAL, "x", "y") is None


def test_the_signature_covers_each_field_apart() -> None:
    """Length-prefixed: moving characters from one field to the next changes the MAC."""
    moved = Seal("call-1f", "tag-1", PROXY, CALLER)  # type: ignore[arg-type]
    assert dialog_seal.signature(SECRET, SEAL) != dialog_seal.signature(SECRET, moved)


def derived_keys(secret: bytes) -> tuple[str, str]:
    """The inner and outer keys, written out: the hex of HMAC-SHA256 of two labels."""
    inner = hmac.new(secret, b"counterpoise seal inner key", hashlib.sha256).hexdigest()
    outer = hmac.new(secret, b"counterpoise seal outer key", hashlib.sha256).hexdigest()
    return inner, outer


def nested_mac(message: bytes, secret: bytes = SECRET) -> str:
    """``CP_MAC``'s steps, written out: the derived keys, then two SHA-256 of hex text."""
    inner, outer = derived_keys(secret)
    digest = hashlib.sha256(inner.encode() + message).hexdigest()
    return hashlib.sha256((outer + digest).encode()).hexdigest()[:33]


def test_the_seal_is_what_a_kamailio_config_computes() -> None:
    """SHA-256 of the outer key and the hex of SHA-256 of the inner key and ``<bytes>:<field>``
    after the purpose (each key 64 hex characters of an HMAC of the secret), cut to 33 hex
    characters."""
    message = b"cpd3" + b"6:call-1" + b"6:ftag-1" + b"22:sip:udp:10.0.0.11:5060"
    message += b"21:udp:198.51.100.7:5062"
    expected = nested_mac(message)
    assert dialog_seal.signature(SECRET, SEAL) == expected
    assert len(expected) == dialog_seal.MAC_CHARS and int(expected, 16) >= 0
    params = f";cpp=sip:udp:10.0.0.11:5060;cpc=udp:198.51.100.7:5062;cpd3=1.{expected}"
    assert dialog_seal.record_route_params("1", SECRET, SEAL) == params
    utf8 = dialog_seal.native_mac(SECRET, b"p", ["é"])  # the length counts bytes, as s.len
    assert utf8 == nested_mac(b"p2:\xc3\xa9")


def test_the_derived_keys_fill_a_block_and_tell_nothing_of_each_other() -> None:
    inner, outer = dialog_seal.derived_keys(SECRET)
    assert len(inner) == len(outer) == 64 and inner != outer
    assert dialog_seal.derived_keys(OTHER_SECRET)[0] not in (inner, outer)
    assert SECRET.hex() not in (inner, outer)


@pytest.mark.parametrize(
    "fields",
    [
        ("call-1", "ftag-1:", "x"),
        ("call-1", "ftag-1", "x", ""),
        ("call-", "1ftag-1", "x"),
        ("call-16:ftag-1", "x"),
        ("", "call-1", "ftag-1", "x"),
    ],
)
def test_fields_shifted_never_sign_the_same(fields: tuple[str, ...]) -> None:
    """``<bytes>:<field>``: however characters move between fields (a colon or a digit
    included), the message differs, so does the MAC."""
    original = dialog_seal.native_mac(SECRET, b"cpd3", ("call-1", "ftag-1", "x"))
    assert dialog_seal.native_mac(SECRET, b"cpd3", fields) != original


OLD = "sip:192.0.2.1;lr;ftag=ftag-1;cpp=sip:udp:10.0.0.11:5060;cpc=udp:198.51.100.7:5062"


def mac_v2() -> str:
    """``cpd2``: crypto's HMAC keyed with the secret's hex text, 22 characters of its base64."""
    message = b"cpd2" + b"6:call-1" + b"6:ftag-1" + b"22:sip:udp:10.0.0.11:5060"
    message += b"21:udp:198.51.100.7:5062"
    digest = hmac.new(SECRET.hex().encode(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()[:22]


def mac_v1() -> str:
    """``cpd``: HMAC keyed with the secret's bytes over 4-byte length-prefixed fields, cut to
    16 bytes."""
    fields = (b"call-1", b"ftag-1", b"sip:udp:10.0.0.11:5060", b"sip:udp:198.51.100.7:5062")
    message = b"cpd1" + b"".join(len(f).to_bytes(4, "big") + f for f in fields)
    mac = hmac.new(SECRET, message, hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def test_the_first_versions_signature_is_its_own_definition() -> None:
    assert dialog_seal.signature_v1(SECRET, SEAL) == mac_v1()


@pytest.mark.parametrize(("param", "mac"), [("cpd2", mac_v2()), ("cpd", mac_v1())])
def test_a_seal_of_a_version_before_still_verifies_and_is_never_made(param: str, mac: str) -> None:
    """A dialog sealed before an upgrade (one upgrade or two) ends on an upgraded node;
    edited, it is refused; a Route with the current seal too is read as the current alone."""
    assert admit(f"{OLD};{param}=1.{mac}") == PROXY
    assert admit(f"{OLD};{param}=1.{mac[:-1]}{'B' if mac.endswith('A') else 'A'}") is None
    assert admit(f"{OLD.replace('5062', '5063')};{param}=1.{mac}") is None
    assert admit(f"{OLD};cpd3=1.{mac}") is None  # each version under its own name
    assert f"{param}=" not in route()
    v3 = route()
    assert admit(f"{v3};{param}=1.{mac}") == PROXY
    assert admit(v3.replace("cpd3=1.", "cpd3=1.a") + f";{param}=1.{mac}") is None


def test_the_config_looks_sources_up_by_host_and_port_and_by_proxy() -> None:
    hops = {
        "sip:10.0.0.11:5060": frozenset({("10.0.0.11", 5060)}),
        "sip:px.example;transport=tcp": frozenset({("px.example", 5060), ("2001:db8::1", 5060)}),
    }
    tcp = "sip:tcp:px.example:5060"
    assert dialog_seal.source_keys(hops) == {
        "10.0.0.11:5060", "10.0.0.11",
        "sip:udp:10.0.0.11:5060|10.0.0.11:5060", "sip:udp:10.0.0.11:5060|10.0.0.11",
        "px.example:5060", "px.example", "[2001:db8::1]:5060", "[2001:db8::1]",
        f"{tcp}|px.example:5060", f"{tcp}|px.example",
        f"{tcp}|[2001:db8::1]:5060", f"{tcp}|[2001:db8::1]",
    }  # fmt: skip


# --- the key ring -----------------------------------------------------------------------------


def test_keys_parse_and_bad_ones_are_refused() -> None:
    key = DialogKey("3", 1000, SECRET)
    assert dialog_seal.parse_key("3", key.encode()) == key
    for key_id, value in [("x", key.encode()), ("3", "1000 abcd"), ("3", "soon " + SECRET.hex())]:
        with pytest.raises(BadRecord):
            dialog_seal.parse_key(key_id, value)


def test_the_newest_active_key_signs_and_a_rotation_keeps_two_before_it() -> None:
    ring = {"1": DialogKey("1", 0, SECRET)}
    new, dropped = dialog_seal.rotated(ring, OTHER_SECRET, 10_000)
    assert new.key_id == "2" and dropped == []
    ring[new.key_id] = new
    assert dialog_seal.signing_key(ring, 9_999) == ring["1"]  # not every node has it yet
    assert dialog_seal.signing_key(ring, 10_000) == new
    third, dropped = dialog_seal.rotated(ring, SECRET, 20_000)
    assert dropped == []
    ring[third.key_id] = third
    fourth, dropped = dialog_seal.rotated(ring, SECRET, 30_000)
    assert fourth.key_id == "4" and dropped == ["1"]


def test_when_no_key_is_active_yet_the_oldest_signs() -> None:
    """Key 1 dropped by rotations faster than the activation delay: a node still signs."""
    ring = {"3": DialogKey("3", 50_000, SECRET), "4": DialogKey("4", 60_000, SECRET)}
    assert dialog_seal.signing_key(ring, 10_000) == ring["3"]
    assert dialog_seal.signing_key({}, 10_000) is None


# --- fuzz -------------------------------------------------------------------------------------

FUZZ_CASES = 20_000


def test_fuzzed_in_dialog_requests_go_only_where_a_valid_seal_says() -> None:
    """Random Routes (edited seals, other keys, other hosts, transports and schemes), tags,
    Call-IDs and sources: every admitted request carries the untouched seal of the real
    dialog, and goes to its proxy (from outside the pool) or to its caller (from that
    proxy); nothing else is admitted."""
    rng = random.Random(20261206)
    good = route()
    pieces = [
        good,
        good.replace("cpp=sip:udp:10.0.0.11:5060", "cpp=sip:udp:203.0.113.50:5060"),
        good.replace("udp", rng.choice(["tcp", "tls", "sctp", "ws"])),
        good.replace("sip:", "sips:"),
        good.replace(";lr", ";transport=tcp;lr"),
        route(key_id="2", secret=OTHER_SECRET),
        route(Seal("call-1", "ftag-1", OUTSIDE, CALLER), secret=OTHER_SECRET),  # type: ignore[arg-type]
        "sip:192.0.2.1;lr",
        "sip:203.0.113.50;lr",
        "",
    ]
    sources = [("198.51.100.7", 5062), ("10.0.0.11", 5060), ("10.0.0.12", 5060), ("203.0.113.9", 1)]
    tags = ["ftag-1", "callee", "x", None]
    admitted = 0
    for _ in range(FUZZ_CASES):
        uri = rng.choice(pieces)
        if rng.random() < 0.3 and uri:
            cut = rng.randrange(len(uri))
            uri = uri[:cut] + rng.choice(["", ";", "=", "x", ":", "%00", "\xff"]) + uri[cut + 1 :]
        source, stream = rng.choice(sources), rng.random() < 0.3
        request = {
            "call_id": rng.choice(["call-1", "call-2", ""]),
            "from_tag": rng.choice(tags),
            "to_tag": rng.choice(tags),
            "source": source,
            "stream": stream,
        }
        hop = admit(uri, **request)
        if hop is None:
            continue
        admitted += 1
        assert dialog_seal.read_seal(uri, "call-1", KEYS.get) == SEAL
        assert request["call_id"] == "call-1"
        if hop == PROXY:
            assert request["from_tag"] == "ftag-1" and source[0] not in {h for h, _ in POOL}
        else:
            assert hop == CALLER and request["to_tag"] == "ftag-1"
            assert source[0] == "10.0.0.11"
    assert admitted > 0  # the fuzz did reach the admitted cases too
