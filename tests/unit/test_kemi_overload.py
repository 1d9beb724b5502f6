"""Issue 14's edge rules through the fake KSR: the retry budget in the failure route, the
long first-reply timeout of a queueing proxy."""

from __future__ import annotations

import pytest

from counterpoise.core.routing_table import RoutingEntry
from counterpoise.core.settings import Settings
from counterpoise.kamailio import htables

from ..fakes.edge import Node
from ..fakes.ksr import FakeKsr

A, B = "sip:10.0.0.1:5060", "sip:10.0.0.2:5060"
S = Settings.of(location_server=False)


@pytest.fixture
def node(ksr: FakeKsr, monkeypatch: pytest.MonkeyPatch) -> Node:
    return Node(ksr, monkeypatch, S)


def test_a_timeout_beyond_the_retry_budget_is_answered_not_retried(node: Node, ksr: FakeKsr):
    node.pool(A, B)
    retries = ksr.htables[htables.RETRY_BUDGET.name]
    tokens = int(S.failover.retry_budget_floor_per_s * S.failover.retry_budget_window_ms / 1000)
    assert retries[htables.RETRY_TOKENS] == tokens
    retries[htables.RETRY_TOKENS] = 1
    node.route("INVITE")
    node.fail(408, after_ms=S.failover.fr_timer_ms, timeout=True, replied=False)
    assert len(node.tried) == 2  # retried: the last token spent
    assert (retries[htables.RETRY_TOKENS], retries[htables.RETRIES_SPENT]) == (0, 1)
    node.route("INVITE")
    node.fail(408, after_ms=S.failover.fr_timer_ms, timeout=True, replied=False)
    assert len(node.tried) == 1  # the new request went to one proxy only: not retried
    assert retries[htables.RETRIES_REFUSED] == 1
    assert any("retry budget spent" in text for text in ksr.logged("info"))


def test_a_request_waits_for_a_first_reply_as_long_as_the_table_says(node: Node, ksr: FakeKsr):
    node.pool(A)
    node.route("INVITE")
    assert ksr.relays[-1]["fr_timers"] == (S.failover.fr_inv_timer_ms, S.failover.fr_timer_ms)
    # The sync loop found A's queue long: the table says so, and the next request waits longer.
    node.publish(RoutingEntry(A, 1.0, queueing=True, inflight_limit=0, long_wait=True))
    node.route("INVITE")
    assert ksr.relays[-1]["fr_timers"] == (
        S.failover.fr_inv_timer_ms,
        S.timers.saturated_fr_timer_ms,
    )
