"""Issue 14's retry rules with a fake clock: the failover verdict, the node's retry budget,
and where a retry goes."""

from __future__ import annotations

import random

import pytest

from counterpoise.core.attempts import Failure, RetryBudget, Verdict, fails_over
from counterpoise.core.selection import WeightedPicker
from counterpoise.core.settings import Settings

S = Settings()


def timeout(attempts: int = 1, **changes: object) -> Failure:
    fields = {"timed_out": True, "replied": False, "rang": False, "status": 408}
    fields |= {"canceled": False, "held": False}
    return Failure(attempts=attempts, **{**fields, **changes})


class Tokens:
    def __init__(self, left: int) -> None:
        self.left, self.asked = left, 0

    def take(self) -> bool:
        self.asked += 1
        if self.left > 0:
            self.left -= 1
            return True
        return False


def test_a_due_retry_spends_a_token_and_beyond_the_budget_is_answered():
    tokens = Tokens(1)
    assert fails_over(timeout(), 3, tokens.take) == Verdict.RETRY
    assert fails_over(timeout(), 3, tokens.take) == Verdict.OVER_BUDGET
    assert tokens.asked == 2


@pytest.mark.parametrize(
    "failure",
    [
        timeout(attempts=3),  # no attempt left
        timeout(canceled=True),
        timeout(held=True),  # bound to its location holder
        timeout(timed_out=False, replied=True, status=486),  # the callee's answer
        timeout(replied=True, rang=True),  # the callee rang, then no answer
    ],
)
def test_a_retry_that_is_not_due_spends_no_token(failure: Failure):
    tokens = Tokens(5)
    assert fails_over(failure, 3, tokens.take) == Verdict.ANSWER
    assert tokens.asked == 0


def test_budget_is_the_floor_plus_a_fraction_of_the_window_requests():
    settings = Settings.of(retry_budget_fraction=0.2, retry_budget_floor_per_s=1.0)
    budget = RetryBudget(settings)
    floor = 10  # 1/s over the 10 s window
    assert budget.tokens(0, attempts=0, retries_total=0) == floor
    # 50 requests/s for 5 s (one tick a second): 250 requests, 20 % of them is 50 retries.
    for second in range(1, 6):
        tokens = budget.tokens(second * 1000, attempts=50, retries_total=0)
    assert tokens == floor + 50
    # 30 retries spent (and 30 of the attempts were retries, not requests).
    assert budget.tokens(6000, attempts=30, retries_total=30) == floor + 50 - 30
    # The window slides: 10 s later, nothing counts any more but the floor.
    assert budget.tokens(16_500, attempts=0, retries_total=30) == floor


def test_a_retry_storm_is_bounded():
    # Every request fails and would be retried: 10 requests per 200 ms tick for 20 s, each
    # retried while tokens last. Unbudgeted, that is 1000 retries; budgeted, each 10 s window
    # allows the floor plus 20 % of its 500 requests.
    budget = RetryBudget(S)
    spent = 0
    tokens = budget.tokens(0, 0, 0)
    for tick in range(1, 101):
        retries = min(tokens, 10)
        spent += retries
        tokens = budget.tokens(tick * 200, attempts=10 + retries, retries_total=spent)
    per_window = S.failover.retry_budget_floor_per_s * 10 + S.failover.retry_budget_fraction * 500
    assert spent <= 2 * per_window
    assert spent >= per_window  # the budget is spent, not withheld


def test_a_node_restart_of_the_counter_does_not_make_negative_spending():
    budget = RetryBudget(S)
    budget.tokens(0, 0, 50)
    assert budget.tokens(200, 0, 0) == int(S.failover.retry_budget_floor_per_s * 10)


def test_a_retry_goes_to_the_untried_proxy_with_the_most_room():
    picker = WeightedPicker([("sip:a", 1.0), ("sip:b", 1.0), ("sip:c", 2.0)])
    inflight = {"sip:a": 0, "sip:b": 9, "sip:c": 3}.__getitem__
    # c has 4/2 per unit of weight with the retry counted, a 1/1: a has the most room.
    assert picker.least_loaded(inflight) == "sip:a"
    assert picker.least_loaded(inflight, exclude=["sip:a"]) == "sip:c"
    # b is saturated (9 in flight): never chosen while another proxy has room.
    rng = random.Random(1)
    for _ in range(100):
        assert picker.least_loaded(inflight, exclude=[rng.choice(["sip:a", "sip:c"])]) != "sip:b"
    assert picker.least_loaded(inflight, exclude=["sip:a", "sip:c"]) == "sip:b"
    assert picker.least_loaded(inflight, exclude=["sip:a", "sip:b", "sip:c"]) is None


def test_a_queue_wait_before_100_trying_counts_uncapped():
    from counterpoise.core.attempts import latency_sample_ms

    # No queue: 100 at once, 180 after 120 ms: the 180 (capped at the penalty) as before.
    assert latency_sample_ms(120, 3000, 500, trying_ms=2) == 120
    assert latency_sample_ms(None, 30_000, 500, trying_ms=2) == 500  # a late callee
    # 2.8 s in the proxy's queue before a worker sent its 100: the wait is the proxy's.
    assert latency_sample_ms(2900, 2900, 500, trying_ms=2800) == 2800
    assert latency_sample_ms(120, 3000, 500) == 120  # no 100 seen


def test_the_retry_and_ejection_counters_are_in_the_metrics():
    from counterpoise.monitoring import node

    from ..fakes.sync import Harness, MemoryStore

    store = MemoryStore()
    harness = Harness(store, S)
    store.add("sip:10.0.0.1:5060")
    harness.shared.retries_spent, harness.shared.retries_refused = 7, 2
    harness.tick()
    harness.loop.ejections_refused = 1
    view = node.NodeView(
        sync=harness.loop,
        now_ms=harness.clock.now,
        counters={},
        location_counters={},
        inflight={},
        ticks=node.TickStats(),
        redis_errors=0,
    )
    text = node.render(view).decode()
    assert 'counterpoise_retries_total{node="lb1",outcome="spent"} 7.0' in text
    assert 'counterpoise_retries_total{node="lb1",outcome="refused"} 2.0' in text
    assert 'counterpoise_ejections_refused_total{node="lb1"} 1.0' in text
