"""Where the timer process writes the pool's addresses for the config's native routes
(``kamailio/pool_addresses.py``): both tables from one resolution of the table's proxies,
rewritten only when they change."""

from __future__ import annotations

import pytest

from counterpoise.core import dialog_seal
from counterpoise.core.routing_table import RoutingEntry
from counterpoise.core.settings import Settings
from counterpoise.kamailio import htables

from ..fakes.edge import Node
from ..fakes.ksr import FakeKsr

A, B = "sip:10.0.0.1:5060", "sip:10.0.0.2:5060"
NAMED = "sip:proxy.example:5070"


@pytest.fixture
def node(ksr: FakeKsr, monkeypatch: pytest.MonkeyPatch) -> Node:
    return Node(ksr, monkeypatch, Settings.of(location_server=False, hold_queue_ms=0))


def entry(uri: str, weight: float = 1.0) -> RoutingEntry:
    return RoutingEntry(uri, weight, False, 0, long_wait=False)


def test_the_pool_addresses_follow_the_proxies_of_the_table(node: Node, ksr: FakeKsr):
    node.publish(entry(A), entry(B))
    assert ksr.htables["cpproxy"] == {"10.0.0.1 5060": A, "10.0.0.2 5060": B}
    both = {A: frozenset({("10.0.0.1", 5060)}), B: frozenset({("10.0.0.2", 5060)})}
    assert set(ksr.htables[htables.POOL_ADDRESSES.name]) == dialog_seal.source_keys(both)
    node.publish(entry(B))
    assert ksr.htables["cpproxy"] == {"10.0.0.2 5060": B}
    only_b = {B: frozenset({("10.0.0.2", 5060)})}
    assert set(ksr.htables[htables.POOL_ADDRESSES.name]) == dialog_seal.source_keys(only_b)


def address_writes(ksr: FakeKsr) -> list[tuple[str, tuple[object, ...]]]:
    tables = ("cpproxy", htables.POOL_ADDRESSES.name)
    return [(name, args) for name, args in ksr.calls if args and args[0] in tables]


def test_a_named_proxy_is_resolved_once_for_both_tables_and_not_again_while_it_stays(
    node: Node, ksr: FakeKsr, monkeypatch: pytest.MonkeyPatch
):
    from counterpoise.kamailio import pool_addresses

    asked: list[str] = []

    def resolve(host: str) -> list[str]:
        asked.append(host)
        return ["192.0.2.50"]

    monkeypatch.setattr(pool_addresses, "resolve", resolve)
    node.publish(entry(NAMED))
    assert asked == ["proxy.example"]
    assert ksr.htables["cpproxy"] == {"proxy.example 5070": NAMED, "192.0.2.50 5070": NAMED}
    addresses = ksr.htables[htables.POOL_ADDRESSES.name]
    assert {"192.0.2.50:5070", "192.0.2.50", "proxy.example:5070"} <= set(addresses)
    written = address_writes(ksr)
    node.publish(entry(NAMED, weight=0.5))  # the same proxies: nothing resolved or written
    assert asked == ["proxy.example"] and address_writes(ksr) == written
