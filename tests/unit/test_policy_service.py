"""The service estimate (``policy.service``): a first reply split at the 100 Trying into the
proxy's queue wait and its work."""

from __future__ import annotations

import math

import pytest

from counterpoise.core.policy.service import Service
from counterpoise.core.settings import Settings
from counterpoise.core.tally import Tally

LOAD = Settings.of(load_smoothing_tau_ms=3000).load


def window(requests: int, first_ms: int, trying_ms: int) -> Tally:
    """``requests`` answered, each ``first_ms`` to its first reply, ``trying_ms`` to its 100."""
    return Tally(
        requests_ok=requests,
        first_reply_ms_sum=requests * first_ms,
        trying_ms_sum=requests * trying_ms,
    )


def test_the_first_window_sets_both_estimates():
    service = Service().fold(window(4, first_ms=350, trying_ms=250), 1000, LOAD)
    assert service == Service(service_ms=100.0, wait_ms=250.0, sampled_ms=1000)


def test_a_proxy_sending_no_100_shows_no_wait_and_its_whole_first_reply_as_work():
    service = Service().fold(window(2, first_ms=180, trying_ms=0), 1000, LOAD)
    assert (service.service_ms, service.wait_ms) == (180.0, 0.0)


def test_later_windows_move_both_by_the_throughputs_time_constant():
    first = Service().fold(window(4, first_ms=100, trying_ms=0), 1000, LOAD)
    later = first.fold(window(4, first_ms=500, trying_ms=300), 4000, LOAD)
    alpha = 1 - math.exp(-3000 / 3000)
    assert later.service_ms == pytest.approx(100 + (200 - 100) * alpha)
    assert later.wait_ms == pytest.approx(300 * alpha)
    assert later.sampled_ms == 4000


def test_a_window_without_answered_requests_changes_nothing():
    service = Service().fold(window(4, first_ms=120, trying_ms=20), 1000, LOAD)
    assert service.fold(Tally(requests_failed=3, probes_ok=2), 1200, LOAD) is service
