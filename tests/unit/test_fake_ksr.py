"""The fake KSR keeps Kamailio's conventions (so the edge's tests mean what they say)."""

from __future__ import annotations

import pytest

from ..fakes.ksr import HT_NO_INT_VALUE, FakeKsr, declared_htables


def test_return_types_are_kamailios(ksr: FakeKsr):
    import KSR

    ksr.request("INVITE", "sip:bob@example.com")
    assert KSR.is_ACK() is False and KSR.is_method_in("IS") is True  # BOOL
    assert KSR.setdsturi("sip:10.0.0.1") is True and KSR.pv.gete("$du") == "sip:10.0.0.1"
    assert KSR.siputils.has_totag() == -1 and KSR.corex.has_ruri_user() == 1  # INT
    assert KSR.pv.get("$tt") == "" and KSR.pv.get("$avp(x)") is None  # XVAL
    assert KSR.pv.gete("$avp(x)") == "" and KSR.pv.is_null("$avp(x)") is True
    assert KSR.hdr.get("X-None") is None and KSR.hdr.gete("X-None") == ""
    assert KSR.info("text\n") is None


def test_avps_stack_and_last_wins(ksr: FakeKsr):
    import KSR

    ksr.request("INVITE", "sip:bob@example.com")
    KSR.pv.sets("$avp(t)", "a")
    KSR.pv.seti("$avp(t)", 7)
    assert KSR.pv.get("$avp(t)") == 7 and ksr.avps["t"] == ["a", 7]
    with pytest.raises(TypeError):
        KSR.pv.seti("$avp(t)", "7")
    with pytest.raises(OverflowError):
        KSR.pv.seti("$avp(t)", 2**31)
    ksr.reply(200)
    assert KSR.pv.get("$avp(t)") == 7  # kept with the transaction
    ksr.request("INVITE", "sip:bob@example.com")
    assert KSR.pv.get("$avp(t)") is None


def test_unknown_names_fail_loudly(ksr: FakeKsr):
    import KSR

    with pytest.raises(KeyError, match="MESSAGE_PVS"):
        KSR.pv.get("$nosuch")
    with pytest.raises(KeyError, match=r"kamailio\.cfg"):
        KSR.htable.sht_get("nosuch", "k")
    with pytest.raises(AttributeError):
        KSR.tm.t_nosuch()


def test_htables_are_kamailio_cfgs(ksr: FakeKsr):
    import KSR

    assert {"cp", "cpinf", "cptally", "cpload"} <= set(declared_htables())
    assert KSR.htable.sht_inc("cptally", "p") == HT_NO_INT_VALUE  # no initval: not created
    assert KSR.htable.sht_is_null("cptally", "p") == 1
    KSR.htable.sht_seti("cptally", "p", 0)
    assert KSR.htable.sht_inc("cptally", "p") == 1
    assert KSR.htable.sht_is_null("cptally", "p") == -1
    assert KSR.htable.sht_inc("cpinf", "q") == 1  # initval=0 in kamailio.cfg: created
    KSR.htable.sht_sets("cpload", "a", "x")
    KSR.htable.sht_sets("cpload", "b", "y")
    assert KSR.htable.sht_iterator_start("it", "cpload") == 1
    seen = []
    while KSR.htable.sht_iterator_next("it") > 0:
        seen.append((KSR.pv.gete("$shtitkey(it)"), KSR.pv.gete("$shtitval(it)")))
    KSR.htable.sht_iterator_end("it")
    assert seen == [("a", "x"), ("b", "y")]


def test_overrides_and_call_record(ksr: FakeKsr):
    import KSR

    ksr.returns["tm.t_relay"] = -1
    ksr.returns["sanity.sanity_check"] = lambda checks, uri_checks: -1 if uri_checks else 1
    assert KSR.tm.t_relay() == -1 and ksr.relays == []
    assert KSR.sanity.sanity_check(1511, 7) == -1 and KSR.sanity.sanity_check(1511, 0) == 1
    assert ksr.called("sanity.sanity_check") == [(1511, 7), (1511, 0)]
