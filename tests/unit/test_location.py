"""The location server's pure decisions: names, granted expiry, records, routing."""

from __future__ import annotations

import json

import pytest

from counterpoise.cli import main as cli
from counterpoise.core import location
from counterpoise.core.location import Decision, Holder, Record
from counterpoise.core.settings import Fallback
from counterpoise.core.untrusted import BadRecord

A, B = "sip:10.0.0.1:5060", "sip:10.0.0.2:5060"


def test_aor_keeps_the_user_and_lowers_the_host():
    assert location.aor("Alice", "Example.COM") == "Alice@example.com"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("alice@example.com", ("aor", "alice@example.com")),
        ("sip:Alice@Example.com:5060;transport=udp", ("aor", "Alice@example.com")),
        ("<sips:bob@[::1]:5061>", ("aor", "bob@[::1]")),
        ("SIP:carol@host", ("aor", "carol@host")),
        ("Example.ORG", ("domain", "example.org")),
        ("sip:example.org", ("domain", "example.org")),
        ("10.0.0.9", ("domain", "10.0.0.9")),
    ],
)
def test_parse_name(text, expected):
    assert location.parse_name(text) == expected


@pytest.mark.parametrize("text", ["", "  ", "@host", "a b", "sip:"])
def test_parse_name_rejects(text):
    with pytest.raises(location.InvalidName):
        location.parse_name(text)


def test_split_header_values_respects_quotes_and_brackets():
    values = ['"Doe, J" <sip:a@h;x=1,2>;expires=60, <sip:b@h>', "sip:c@h;expires=5"]
    assert location.split_header_values(values) == [
        '"Doe, J" <sip:a@h;x=1,2>;expires=60',
        "<sip:b@h>",
        "sip:c@h;expires=5",
    ]


@pytest.mark.parametrize(
    ("contact", "expected"),
    [
        ("<sip:u@h:5093>;expires=3600;received=x", 3600),
        ("<sip:u@h;expires=9>", None),  # a URI parameter, not the contact's
        ("<sip:u@h>;q=0.5;Expires = 20", 20),
        ("sip:u@h;expires=30", 30),
        ("sip:u@h", None),
    ],
)
def test_contact_expires(contact, expected):
    assert location.contact_expires(contact) == expected


def test_granted_expiry_is_the_longest_binding():
    contacts = ["<sip:u@h:1>;expires=60, <sip:u@h:2>;expires=3600"]
    assert location.granted_expiry_s(contacts, None) == 3600


def test_granted_expiry_falls_back_to_the_header_then_the_default():
    assert location.granted_expiry_s(["<sip:u@h>"], "120") == 120
    assert location.granted_expiry_s(["<sip:u@h>"], None) == location.DEFAULT_EXPIRES_S
    assert location.granted_expiry_s(["<sip:u@h>;expires=5"], "120") == 5


@pytest.mark.parametrize("contacts", [[], [""], ["*"]])
def test_no_binding_left_is_an_unregistration(contacts):
    assert location.granted_expiry_s(contacts, "3600") == 0


def test_expires_zero_on_every_contact_is_an_unregistration():
    assert location.granted_expiry_s(["<sip:u@h>;expires=0"], None) == 0


def test_record_round_trip_and_garbage():
    record = Record(A, since_ms=1, expires_ms=2, from_tag="f", to_tag="t")
    assert Record.from_json(record.to_json()) == record
    assert Record.from_json(Record(A, 5).to_json()) == Record(A, 5)
    assert Record.from_json(None) is None


@pytest.mark.parametrize(
    "record",
    [
        Record(A, 5),
        Record(A, 1, 2, "f", "t", "198.51.100.7"),
        Record(A, 1, 0, "", "t"),
        Record(A, 1, 2, 'a "quoted"\\ tag', "\u00e9\U0001f600\n\x00", "2001:db8::/64"),
    ],
)
def test_a_record_is_the_json_of_its_set_fields_with_sorted_keys(record: Record):
    fields = {"proxy": record.proxy, "since_ms": record.since_ms}
    if record.expires_ms:
        fields["expires_ms"] = record.expires_ms
    if record.from_tag or record.to_tag:
        fields |= {"from_tag": record.from_tag, "to_tag": record.to_tag}
    if record.source:
        fields["source"] = record.source
    assert record.to_json() == json.dumps(fields, sort_keys=True)


BAD_RECORDS = [
    "",
    "not json",
    "[]",
    '{"proxy": 3}',
    '{"x": 1}',
    '{"proxy": ""}',
    '{"proxy": "sip:10.0.0.1:5060", "since_ms": 1e999}',  # OverflowError in int()
    '{"proxy": "sip:10.0.0.1:5060", "expires_ms": 1.5}',
    '{"proxy": "sip:10.0.0.1:5060", "since_ms": -1}',
    '{"proxy": "sip:10.0.0.1:5060\\r\\nX-Evil: 1"}',  # CRLF into a Route header
    '{"proxy": "sip:10.0.0.1:5060,sip:10.0.0.2"}',  # a comma: no URI in normal form
    '{"proxy": "sip:10.0.0.1:5060", "from_tag": 5}',
    "[" * 100_000 + "]" * 100_000,  # RecursionError, if it got past the size bound
    b"\xff\xfe",
]


@pytest.mark.parametrize("text", BAD_RECORDS, ids=range(len(BAD_RECORDS)))
def test_an_unusable_record_is_a_bad_record_never_another_error(text):
    with pytest.raises(BadRecord):
        Record.from_json(text)


def test_deep_nesting_within_the_size_bound_is_a_bad_record():
    deep = "[" * 1000 + "]" * 1000
    with pytest.raises(BadRecord):
        Record.from_json(deep)


def test_dialog_tags_match_in_either_direction():
    record = Record(A, from_tag="caller", to_tag="callee")
    assert record.matches_tags("caller", "callee")
    assert record.matches_tags("callee", "caller")  # a request from the callee
    assert not record.matches_tags("caller", "other")
    assert Record(A).matches_tags("any", "thing")


def test_holder_precedence_pin_registration_domain():
    pin, reg, dom = Record(A), Record(B), Record("sip:10.0.0.3")
    assert location.holder(pin, reg, dom) == Holder(A, location.PIN)
    assert location.holder(None, reg, dom) == Holder(B, location.REGISTRATION)
    assert location.holder(None, None, dom) == Holder("sip:10.0.0.3", location.DOMAIN)
    assert location.holder(None, None, None) is None


def test_decide():
    found = Holder(A, location.REGISTRATION)
    assert location.decide(None, False, False, Fallback.REJECT) == Decision(outcome="none")
    sent = location.decide(found, True, False, Fallback.REJECT)
    assert (sent.proxy, sent.reject, sent.outcome) == (A, False, "registration")
    fallback = location.decide(found, False, False, Fallback.WEIGHT)
    assert (fallback.proxy, fallback.reject, fallback.outcome) == (None, False, "fallback")
    rejected = location.decide(found, False, False, Fallback.REJECT)
    assert (rejected.proxy, rejected.reject, rejected.outcome) == (None, True, "rejected")
    # REGISTER never gets rejected: it must be able to move the user to a live proxy.
    moved = location.decide(found, False, True, Fallback.REJECT)
    assert (moved.proxy, moved.reject, moved.outcome) == (None, False, "fallback")


def test_a_holder_set_aside_for_its_silence_keeps_its_users_only_where_none_else_can_serve():
    found = Holder(A, location.REGISTRATION)
    kept = location.decide(found, False, False, Fallback.REJECT, set_aside=True)
    assert (kept.proxy, kept.reject, kept.outcome) == (A, False, "registration")
    by_weight = location.decide(found, False, False, Fallback.WEIGHT, set_aside=True)
    assert (by_weight.proxy, by_weight.reject, by_weight.outcome) == (None, False, "fallback")
    # A REGISTER moves the user to a proxy that answers, stall or not.
    moved = location.decide(found, False, True, Fallback.REJECT, set_aside=True)
    assert (moved.proxy, moved.reject, moved.outcome) == (None, False, "fallback")


def test_sum_counters_adds_the_workers():
    dump = {
        "11": location.encode_counts({"lookups": 3}),
        "12": location.encode_counts({"lookups": 4, "fallback": 1}),
        "13": "garbled lookups=x =2",
    }
    assert location.sum_counters(dump) == {"lookups": 7, "fallback": 1}


def test_up_refuses_a_bad_location_setting_in_one_line(monkeypatch, capsys):

    monkeypatch.setenv("COUNTERPOISE_LOCATION_FALLBACK", "bogus")
    assert cli.main(["up", "--listen", "127.0.0.1:5060", "--redis", "redis://127.0.0.1:1"]) == 1
    err = capsys.readouterr().err
    assert (
        err == "counterpoise: COUNTERPOISE_LOCATION_FALLBACK='bogus': expected weight or reject\n"
    )


def test_queued_dialog_writes_coalesce_to_the_last_per_call_id():
    set_a = location.PendingWrite("a@h", '{"proxy": "sip:p"}', 1000)
    queued = [
        ("00000000000000000003 12", location.PendingWrite("a@h").encode()),
        ("00000000000000000001 11", set_a.encode()),
        ("00000000000000000002 12", location.PendingWrite("b@h", "{}", 5).encode()),
        ("00000000000000000004 11", "garbage"),
    ]
    writes = location.coalesce(queued)
    # a: set then delete -> delete only; b: its set; the garbage entry is skipped.
    assert writes == [location.PendingWrite("b@h", "{}", 5), location.PendingWrite("a@h")]
    assert location.PendingWrite.decode(set_a.encode()) == set_a


def test_queue_over_its_byte_cap_drops_the_oldest_entries() -> None:
    queued = [("00003 1", "c" * 10), ("00001 1", "a" * 10), ("00002 1", "b" * 10)]
    assert location.over_bytes(queued, 3 * 17) == []
    assert location.over_bytes(queued, 2 * 17) == [("00001 1", "a" * 10)]
    assert location.over_bytes(queued, 0) == sorted(queued)


@pytest.mark.parametrize(
    "holder", [Holder(A, location.REGISTRATION), Holder(B, location.PIN), None], ids=str
)
def test_cached_holder_round_trips_while_fresh(holder):
    entry = location.CachedHolder(holder, until_ms=5000).encode()
    assert location.CachedHolder.decode(entry, now_ms=4999) == location.CachedHolder(holder, 5000)


@pytest.mark.parametrize("now_ms", [5000, 6000])
def test_cached_holder_is_a_miss_once_stale(now_ms):
    entry = location.CachedHolder(Holder(A, location.REGISTRATION), 5000).encode()
    assert location.CachedHolder.decode(entry, now_ms) is None


@pytest.mark.parametrize("garbled", ["", "soon", "-5", "9999 registration", "9999 "])
def test_cached_holder_garbled_entry_is_a_miss(garbled):
    assert location.CachedHolder.decode(garbled, now_ms=0) is None


def test_a_source_is_an_ipv4_address_or_the_ipv6_64_around_one():
    assert location.source_of("198.51.100.7") == "198.51.100.7"
    assert location.source_of("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert location.source_of("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    record = Record(A, 1, 2, "f", "t", "2001:db8:1:2::/64")
    assert Record.from_json(record.to_json()) == record
    with pytest.raises(BadRecord):
        Record.from_json(json.dumps({"proxy": A, "source": "x" * 65}))


def test_a_delete_removes_only_the_record_of_its_own_tags():
    record = Record(A, 1, 2, "caller", "callee", "198.51.100.7")
    assert location.PendingWrite("c", tags=("callee", "caller")).deletes(record)
    assert not location.PendingWrite("c", tags=("caller", "forged")).deletes(record)
    assert not location.PendingWrite("c", tags=("caller", "callee")).deletes(None)
    delete = location.PendingWrite("c", tags=("caller", "callee"))
    assert location.PendingWrite.decode(delete.encode()) == delete


def test_records_within_the_cap_of_their_source():
    def write(name: str, source: str) -> location.PendingWrite:
        return location.PendingWrite.setting(name, Record(A, source=source), 1000)

    writes = [write("1", "a"), write("2", "a"), write("3", "b"), write("4", "a")]
    written, refused = location.within_cap(writes, {"a": 1}, cap=2)
    assert [w.name for w in written] == ["1", "3"]
    assert [w.name for w in refused] == ["2", "4"]


def test_a_local_dialog_copy_round_trips_and_anything_else_reads_as_none():
    record = Record(A, 1, 2, "caller", "callee", "198.51.100.7")
    assert Record.from_local(record.to_local()) == record
    for garbled in ["", "[1, 2]", '{"proxy": "sip:p"}', "not json"]:
        assert Record.from_local(garbled) is None


def test_a_queued_set_carries_its_records_source():
    record = Record(A, 1, 2, "caller", "callee", "198.51.100.7")
    write = location.PendingWrite.setting("c", record, 1000)
    assert (write.record, write.source) == (record.to_json(), "198.51.100.7")
    assert location.PendingWrite.decode(write.encode()) == write


def test_the_timer_takes_only_the_batches_of_periods_before_the_previous_one():
    queued = [
        (location.batch_key(7, 11), "a"),
        (location.batch_key(8, 11), "b"),
        (location.batch_key(9, 12), "c"),
        ("garbage", "d"),
    ]
    assert location.closed_batches(queued, current_period=9) == [queued[0], queued[3]]
    assert location.closed_batches(queued, current_period=11) == queued


def test_batched_writes_coalesce_in_period_then_queueing_order():
    set_a = location.PendingWrite("a@h", '{"proxy": "sip:p"}', 1000)
    delete_a = location.PendingWrite("a@h", tags=("f", "t"))
    set_b = location.PendingWrite("b@h", "{}", 5)
    later = "\n".join([location.batch_line(1, delete_a), location.batch_line(2, set_b)])
    earlier = location.batch_line(900, set_a)  # a later clock reading, an earlier period
    batches = [(location.batch_key(8, 11), later), (location.batch_key(7, 12), earlier)]
    assert len(location.batched_writes(batches)) == 3
    assert location.coalesce(location.batched_writes(batches)) == [delete_a, set_b]


@pytest.mark.parametrize(
    "text", ["plain", 'quo"te\\back', "new\nline\x01", "é" * 30, "\U0001f600" * 40]
)
def test_a_batch_line_is_never_longer_than_its_bound(text: str):
    setting = location.PendingWrite(text, json.dumps({"proxy": text}), 123_456, (text, text), text)
    deleting = location.PendingWrite(text, tags=(text, ""))
    for write in (setting, deleting):
        line = location.batch_line(2**62, write)
        assert len(line) <= location.batch_line_most_chars(write)


def test_a_confirmed_record_is_the_same_record_with_its_source():
    record = Record("sip:10.0.0.1:5060", 1, 2, "f", "t")
    assert record.confirmed_by("192.0.2.7") == Record(
        "sip:10.0.0.1:5060", 1, 2, "f", "t", "192.0.2.7"
    )


def test_the_copy_a_native_reply_route_writes_reads_as_the_same_record():
    text = f"{location.NATIVE_LOCAL}sip:10.0.0.1:5060 1700000000 123456 x{b'ft'.hex()} x"
    record = location.Record.from_local(text, ttl_ms=60_000)
    assert record == location.Record(
        "sip:10.0.0.1:5060", 1_700_000_000_123, 1_700_000_060_123, "ft", ""
    )
    assert location.Record.from_local("n sip:a 1 2 x x") == location.Record("sip:a", 1000, 1000)
    for bad in (
        "n sip:a 1 2 x",
        "n  1 2 x x",
        "n sip:a one 2 x x",
        "n sip:a 1 2 zz x",
        "n sip:a 1 2 xzz x",
        "n sip:a 1 2 xff x",
    ):
        assert location.Record.from_local(bad) is None, bad
