"""Redis backoff with injected times."""

from __future__ import annotations

from counterpoise.core.backoff import Backoff


def closed_until(backoff: Backoff, now: int) -> int:
    """The first ms from ``now`` at which ``ready`` says yes (searching 1 ms steps)."""
    t = now
    while not backoff.ready(t):
        t += 1
    return t


def test_ready_before_any_failure():
    backoff = Backoff(250, 2000)
    assert backoff.ready(0)
    assert backoff.ready(10**12)
    assert backoff.failures == 0


def test_delay_doubles_up_to_the_maximum():
    backoff = Backoff(250, 2000)
    now = 1000
    delays = []
    for _ in range(7):
        backoff.failed(now)
        assert not backoff.ready(now)
        reopen = closed_until(backoff, now)
        delays.append(reopen - now)
        now = reopen
    assert delays == [250, 500, 1000, 2000, 2000, 2000, 2000]
    assert backoff.failures == 7


def test_ready_boundary():
    backoff = Backoff(250, 2000)
    backoff.failed(10_000)
    assert not backoff.ready(10_249)
    assert backoff.ready(10_250)


def test_success_resets():
    backoff = Backoff(100, 1000)
    for now in (0, 100, 300, 700):
        backoff.failed(now)
    assert backoff.failures == 4
    backoff.succeeded()
    assert backoff.failures == 0
    assert backoff.ready(701)
    # The next failure starts again from the initial delay.
    backoff.failed(5000)
    assert not backoff.ready(5099)
    assert backoff.ready(5100)


def test_maximum_below_initial_caps_the_first_delay():
    backoff = Backoff(500, 300)
    backoff.failed(0)
    assert not backoff.ready(299)
    assert backoff.ready(300)
