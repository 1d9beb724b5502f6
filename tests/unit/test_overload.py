"""Issue 14's rules with a fake clock (explicit ``now_ms``): overload is not death, the
ejection cap, recovery after a short outage, slow start when the rest is saturated."""

from __future__ import annotations

import pytest

from counterpoise.core.policy.health import State, silent
from counterpoise.core.policy.latency import window_latency_ms
from counterpoise.core.policy.observed import Observed, new_observed, observe, observe_pool
from counterpoise.core.policy.timers import LONG_WAIT_FRACTION
from counterpoise.core.policy.weights import weigh
from counterpoise.core.settings import Settings
from counterpoise.core.tally import Tally
from tests.unit.test_policy import failed, feed, ok, probe_failed, probes, up_at

S = Settings()
WARM_WINDOWS = 5 * S.load.load_smoothing_tau_ms // 200
"""200 ms windows that bring a moving average over ``load_smoothing_tau_ms`` within 1 % of a
steady input (five time constants)."""
LATE = Tally(late_replies=1)
"""A reply to a request the balancer had already given up on."""


def timeouts_with(sign: Tally, start: int, windows: int) -> Observed:
    """A proxy up at 100 ms, then ``windows`` windows of 200 ms, each with 3 timeouts and
    ``sign``."""
    proxy = up_at(100, start - 200)
    return feed(proxy, [(start + 200 * i, failed(3) + sign) for i in range(windows)])


def test_a_saturated_proxy_that_still_answers_is_slow_not_down():
    # Every window: 3 requests time out, but a late reply to an earlier one comes back.
    proxy = timeouts_with(LATE, 10_000, 10)
    assert proxy.health.state == State.UP
    assert proxy.health.consecutive_failures == 0
    # Each window's mean is (3 x 500 ms) / 3 samples: its estimate rises toward 500 ms ...
    assert proxy.latency.estimate_ms > 400
    assert proxy.saturated(12_000, S)
    # ... so it keeps a small share, not none: 110/510 of a 100 ms peer's weight.
    weights = weigh({"sip:a": 1.0, "sip:b": 1.0}, set(), {"sip:a": proxy, "sip:b": up_at(100)},
                    12_000, S)  # fmt: skip
    assert 0 < weights["sip:a"].weight < 0.3 * weights["sip:b"].weight


def test_answers_in_time_are_signs_of_life_too():
    proxy = timeouts_with(ok(1, 900), 10_000, 10)
    assert proxy.health.state == State.UP


def test_a_silent_proxy_is_down_after_the_failure_streak():
    # Nothing comes back at all (a dead or frozen proxy): 3 failures in a row mark it down.
    proxy = timeouts_with(Tally(), 10_000, 1)
    assert proxy.health.state == State.DOWN
    assert not proxy.health.down_by_probes
    # Missed probes in the streak: down as dead.
    proxy = feed(up_at(100), [(9_000, failed(2)), (9_200, probe_failed())])
    assert (proxy.health.state, proxy.health.down_by_probes) == (State.DOWN, True)


def test_failures_between_sparse_signs_of_life_do_not_mark_it_down():
    # A one-worker proxy with a long queue: a late reply every other 200 ms window, three
    # timeouts in each window without one. The streak reaches 3, but the proxy answered
    # something within fr_timer_ms: it is saturated, not dead.
    proxy = up_at(100)
    for i in range(20):
        proxy = observe(proxy, failed(3) if i % 2 else LATE, 9_000 + 200 * i, S)
        assert proxy.health.state == State.UP
    # Then it falls silent: down once fr_timer_ms has passed since its last answer.
    last = 9_000 + 200 * 18  # its last late reply
    quiet = range(1, S.failover.fr_timer_ms // 200)  # failures only, for less than fr_timer_ms
    proxy = feed(proxy, [(last + 200 * i, failed(1)) for i in quiet])
    assert proxy.health.state == State.UP
    proxy = observe(proxy, failed(1), last + S.failover.fr_timer_ms, S)
    assert proxy.health.state == State.DOWN


def test_a_late_reply_between_failures_restarts_the_streak():
    proxy = feed(up_at(100), [(9_000, failed(2)), (9_200, LATE), (9_400, failed(2))])
    assert (proxy.health.state, proxy.health.consecutive_failures) == (State.UP, 2)


def pool(**proxy: Observed) -> dict[str, Observed]:
    return {f"sip:{name}": h for name, h in proxy.items()}


BASE = {"sip:a": 1.0, "sip:b": 1.0, "sip:c": 1.0}


def test_the_cap_refuses_an_ejection_beyond_max_ejected_fraction():
    # a is already down for failed requests (it answers probes): 1/3 of the pool.
    a = feed(up_at(100), [(9_000, failed(3))])
    assert a.health.state == State.DOWN and not a.health.down_by_probes
    proxy = pool(a=a, b=up_at(100), c=up_at(100))
    # b now fails 3 requests, answering its probes: 2/3 would be down, over the 0.5 cap.
    seen = observe_pool(proxy, {"sip:b": failed(3)}, BASE, 9_200, S)
    assert seen.observed["sip:b"].health.state == State.UP
    assert seen.observed["sip:b"].health.ejection_refused
    assert seen.ejections_refused == 1
    # The refusal is counted once per streak, and the proxy stays in while it fails.
    again = observe_pool(seen.observed, {"sip:b": failed(3)}, BASE, 9_400, S)
    assert again.observed["sip:b"].health.state == State.UP
    assert again.ejections_refused == 0
    # A sign of life ends the streak; a new streak that is refused is counted again.
    alive = observe_pool(again.observed, {"sip:b": ok(1, 100)}, BASE, 9_600, S)
    assert not alive.observed["sip:b"].health.ejection_refused
    later = 9_600 + S.failover.fr_timer_ms
    assert observe_pool(alive.observed, {"sip:b": failed(3)}, BASE, later, S).ejections_refused == 1


def test_the_first_ejection_is_always_allowed_and_dead_proxies_are_not_capped():
    # One proxy holding 3/4 of the base weight may be ejected: nothing else is down.
    big = {"sip:a": 3.0, "sip:b": 1.0}
    seen = observe_pool(pool(a=up_at(100), b=up_at(100)), {"sip:a": failed(3)}, big, 9_000, S)
    assert seen.observed["sip:a"].health.state == State.DOWN
    # b then dies (misses its probes too): dead proxies are marked down whatever the cap.
    dead = observe_pool(seen.observed, {"sip:b": failed(2) + probe_failed()}, big, 9_200, S)
    assert dead.observed["sip:b"].health.state == State.DOWN
    assert dead.ejections_refused == 0


def test_a_cap_of_one_never_refuses_and_drained_proxies_do_not_count():
    settings = Settings.of(max_ejected_fraction=1.0)
    a = feed(up_at(100), [(9_000, failed(3))])
    proxy = pool(a=a, b=up_at(100), c=up_at(100))
    seen = observe_pool(proxy, {"sip:b": failed(3)}, BASE, 9_200, settings)
    assert seen.observed["sip:b"].health.state == State.DOWN
    # With c drained (not in ``active``), a and b are the whole pool: b's ejection would take
    # it to 100 % down, over 0.5.
    active = {"sip:a": 1.0, "sip:b": 1.0}
    refused = observe_pool(proxy, {"sip:b": failed(3)}, active, 9_200, S)
    assert refused.observed["sip:b"].health.state == State.UP


def test_back_from_a_brief_outage_at_once_with_its_earlier_latency():
    # Up at 100 ms, then frozen for 3 s: failures (its estimate rises to ~500), down; then
    # its probes are answered again.
    proxy = feed(up_at(100), [(9_000, failed(3)), (9_200, probe_failed())])
    assert proxy.health.state == State.DOWN and proxy.latency.estimate_ms > 300
    proxy = feed(proxy, [(11_000, probes(1)), (12_000, probes(1))])
    assert proxy.health.state == State.UP
    assert proxy.latency.estimate_ms == pytest.approx(100)
    weights = weigh({"sip:a": 1.0, "sip:b": 1.0}, set(), {"sip:a": proxy, "sip:b": up_at(100)},
                    12_000, S)  # fmt: skip
    assert weights["sip:a"].weight == pytest.approx(1.0)  # its whole share, no ramp
    # Then its real latency takes over: answering in 400 ms it loses share within a second.
    proxy = feed(proxy, [(12_200 + 200 * i, ok(5, 400)) for i in range(5)])
    assert proxy.latency.estimate_ms > 350


def test_a_new_proxy_ramps_unless_the_rest_is_saturated():
    new = feed(new_observed(10_000), [(10_000, probes(1))])
    calm = pool(a=up_at(100), n=new)
    weights = weigh({"sip:a": 1.0, "sip:n": 1.0}, set(), calm, 10_000, S)
    assert weights["sip:n"].ramp == pytest.approx(S.health.slow_start_floor)
    # a times out requests while answering others: saturated; the new proxy gets all of its
    # weight at once.
    busy = pool(a=timeouts_with(LATE, 9_000, 3), n=new)
    assert busy["sip:a"].health.state == State.UP
    weights = weigh({"sip:a": 1.0, "sip:n": 1.0}, set(), busy, 10_000, S)
    assert weights["sip:n"].ramp == 1.0
    # Saturation is remembered saturated_memory_ms, then the ramp applies again.
    later = 9_400 + S.timers.saturated_memory_ms
    weights = weigh({"sip:a": 1.0, "sip:n": 1.0}, set(), busy, later, S)
    assert weights["sip:n"].ramp < 1.0


def test_observe_pool_is_observe_when_nothing_is_capped():
    proxy = pool(a=up_at(100), b=up_at(100))
    windows = {"sip:a": ok(2, 50), "sip:b": failed(1)}
    seen = observe_pool(proxy, windows, {"sip:a": 1.0, "sip:b": 1.0}, 9_000, S)
    for uri, h in proxy.items():
        assert seen.observed[uri] == observe(h, windows[uri], 9_000, S)


def test_a_saturated_proxy_that_answers_is_given_longer_to_answer():
    weights = weigh({"sip:a": 1.0}, set(), {"sip:a": up_at(100)}, 9_000, S)
    assert weights["sip:a"].fr_timer_ms == S.failover.fr_timer_ms
    # Timing out requests while late replies come back: its queue delays it.
    busy = timeouts_with(LATE, 10_000, 3)
    weights = weigh({"sip:a": 1.0}, set(), {"sip:a": busy}, 10_400, S)
    assert weights["sip:a"].fr_timer_ms == S.timers.saturated_fr_timer_ms
    # Silent for fr_timer_ms (dead or frozen, not yet down): back to the short timeout, so
    # its requests fail over soon.
    weights = weigh({"sip:a": 1.0}, set(), {"sip:a": busy}, 10_400 + S.failover.fr_timer_ms, S)
    assert weights["sip:a"].fr_timer_ms == S.failover.fr_timer_ms


def test_a_long_queue_gets_the_long_timeout_before_the_first_timeout():
    # Answers in time but 600 ms late (past a third of fr_timer_ms): its queue could reach
    # the short timer by chance.
    slow = feed(up_at(100), [(9_000 + 200 * i, ok(2, 600)) for i in range(10)])
    assert slow.latency.estimate_ms > S.failover.fr_timer_ms * LONG_WAIT_FRACTION
    weights = weigh({"sip:a": 1.0}, set(), {"sip:a": slow}, 11_000, S)
    assert weights["sip:a"].fr_timer_ms == S.timers.saturated_fr_timer_ms
    assert weights["sip:a"].queueing


def test_a_short_queue_keeps_the_short_timeout():
    # 300 ms late: queueing (past half the failure penalty, 250 ms), so holding may limit
    # it, but three such waits still fit in fr_timer_ms: silence that long is a death, and
    # its calls fail over after 1.5 s rather than 6.
    slow = feed(up_at(100), [(9_000 + 200 * i, ok(2, 300)) for i in range(10)])
    assert (
        S.latency.failure_penalty_ms / 2
        < slow.latency.estimate_ms
        < S.failover.fr_timer_ms * LONG_WAIT_FRACTION
    )
    weights = weigh({"sip:a": 1.0}, set(), {"sip:a": slow}, 11_000, S)
    assert weights["sip:a"].queueing
    assert weights["sip:a"].fr_timer_ms == S.failover.fr_timer_ms


def test_late_replies_bring_a_down_proxy_back_before_its_probes_do():
    # Frozen: down. It resumes and answers its backlog (late replies): back up at once.
    proxy = feed(up_at(100), [(9_000, failed(2) + probe_failed())])
    assert proxy.health.state == State.DOWN
    proxy = observe(proxy, Tally(late_replies=5), 11_000, S)
    assert proxy.health.state == State.UP


def test_a_long_queue_weighs_more_than_a_short_one():
    # Both proxies time out every request, one after 4 s, the other after 1.5 s: charged the
    # flat failure penalty they would look alike; charged their waits, the longer queue gets
    # the smaller weight.
    long_wait = Tally().with_timeout(4000, 500).with_timeout(4000, 500)
    short_wait = Tally().with_timeout(1500, 500).with_timeout(1500, 500)
    assert window_latency_ms(long_wait, S.latency) == 4000
    assert window_latency_ms(short_wait, S.latency) == 1500
    a = feed(up_at(100), [(9_000 + 200 * i, long_wait + LATE) for i in range(5)])
    b = feed(up_at(100), [(9_000 + 200 * i, short_wait + LATE) for i in range(5)])
    weights = weigh({"sip:a": 1.0, "sip:b": 1.0}, set(), {"sip:a": a, "sip:b": b}, 10_000, S)
    assert weights["sip:a"].weight < 0.5 * weights["sip:b"].weight


def test_any_reply_heard_is_a_sign_of_life():
    # Its requests time out and no late reply is matched to them, but the workers heard a
    # reply from it (a late 100 Trying, a probe's answer): saturated, not dead.
    proxy = up_at(100)
    for i in range(10):
        proxy = observe(proxy, failed(3), 9_000 + 200 * i, S, heard=True)
    assert proxy.health.state == State.UP
    # Down and heard again: back.
    dead = feed(up_at(100), [(9_000, failed(2) + probe_failed())])
    assert observe(dead, Tally(), 11_000, S, heard=True).health.state == State.DOWN  # one so far
    back = observe(observe(dead, Tally(), 11_000, S, heard=True), Tally(), 11_200, S, heard=True)
    assert back.health.state == State.UP


def test_silence_with_new_requests_counts_as_latency():
    # a answers (heard) at 9 000 with 3 in flight; then new requests go to it and nothing
    # comes back: at 9 200 it weighs as if 200 ms slow, before any request timed out.
    a = observe(up_at(100), ok(1, 100), 9_000, S, heard=True, inflight=3)
    frozen = observe(a, Tally(), 9_200, S, inflight=5)
    assert frozen.silence_ms(9_200) == 200
    assert not silent(frozen.silence_ms(9_200), S.health)
    weights = weigh({"sip:a": 1.0, "sip:b": 1.0}, set(), {"sip:a": frozen, "sip:b": up_at(100)},
                    9_200, S)  # fmt: skip
    assert weights["sip:a"].weight == pytest.approx(110 / 210)
    # A proxy whose calls all ring says nothing for long, but nothing new went to it.
    ringing = a
    for now in (9_200, 9_400, 9_600):
        ringing = observe(ringing, Tally(), now, S, inflight=3)
    assert ringing.silence_ms(9_600) == 0


def frozen_since(life_ms: int, until_ms: int) -> Observed:
    """Heard at ``life_ms`` with 3 in flight, then sent a request every 100 ms and silent,
    observed every 200 ms up to ``until_ms``."""
    proxy = observe(up_at(100), ok(1, 100), life_ms, S, heard=True, inflight=3)
    for now in range(life_ms + 200, until_ms + 1, 200):
        proxy = observe(proxy, Tally(), now, S, inflight=3 + (now - life_ms) // 100)
    return proxy


def test_a_silent_proxy_is_set_aside_not_marked_down():
    # From silent_after_ms (300) of silence with new requests it gets nothing while another
    # proxy is heard, however long the others' queues: the rest of the pool queueing for
    # seconds made its 400 ms of silence look short, and a third of the calls kept going to
    # a frozen proxy until its first timeout.
    frozen = frozen_since(9_000, 9_400)
    assert frozen.silence_ms(9_400) == 400
    queued = observe(up_at(100), ok(1, 3000), 9_400, S, heard=True)
    proxy = {"sip:a": frozen, "sip:b": queued}
    weights = weigh({"sip:a": 4.0, "sip:b": 1.0}, set(), proxy, 9_400, S)
    assert weights["sip:a"].weight == 0.0
    assert weights["sip:a"].silent and weights["sip:a"].state == State.UP
    assert weights["sip:b"].weight > 0 and not weights["sip:b"].silent
    # Still silent once its requests time out and fewer are in flight: set aside until it
    # answers, not sent a new batch each time its count falls.
    fewer = observe(frozen, Tally(), 9_600, S, inflight=1)
    assert silent(fewer.silence_ms(9_600), S.health)
    # Its first reply of any kind brings it back at once, with its estimate.
    back = observe(fewer, Tally(), 9_800, S, heard=True, inflight=1)
    assert not silent(back.silence_ms(9_800), S.health)
    assert weigh({"sip:a": 4.0, "sip:b": 1.0}, set(), {"sip:a": back, "sip:b": queued},
                 9_800, S)["sip:a"].weight > 0  # fmt: skip


def test_silence_sets_nothing_aside_when_every_proxy_is_silent_or_when_off():
    both = {"sip:a": frozen_since(9_000, 9_400), "sip:b": frozen_since(9_000, 9_400)}
    weights = weigh({"sip:a": 1.0, "sip:b": 1.0}, set(), both, 9_400, S)
    assert all(w.weight > 0 and not w.silent for w in weights.values())
    off = Settings.of(silent_after_ms=0)
    proxy = {"sip:a": frozen_since(9_000, 9_400), "sip:b": up_at(100)}
    assert weigh({"sip:a": 1.0, "sip:b": 1.0}, set(), proxy, 9_400, off)["sip:a"].weight > 0


def test_throughput_counts_only_windows_with_a_sign_of_life():
    # 25 completions a second, then frozen (or dead) for 5 s: what it completes meanwhile
    # says nothing of its capacity, so it comes back with its estimate, not with ~0 (which
    # made 3 requests in flight look like a 3 s queue and kept it at a tenth of its share).
    busy = up_at(100)
    for i in range(WARM_WINDOWS):
        busy = observe(busy, ok(5, 100), 9_000 + 200 * i, S, inflight=3)
    before = busy.throughput.per_s
    assert before == pytest.approx(25, rel=0.1)
    start = 9_000 + 200 * WARM_WINDOWS
    frozen = busy
    for i in range(25):
        frozen = observe(frozen, failed(1) if i % 5 == 0 else Tally(), start + 200 * i, S,
                         inflight=3)  # fmt: skip
    assert frozen.throughput.per_s == pytest.approx(before)
    back = observe(frozen, ok(5, 100), start + 5_000, S, heard=True, inflight=3)
    assert back.throughput.per_s == pytest.approx(before, rel=0.1)
    # An idle proxy that answers its probes is alive: its estimate decays as it completes
    # nothing.
    idle = busy
    for i in range(WARM_WINDOWS):
        idle = observe(idle, probes(1), start + 200 * i, S, inflight=0)
    assert idle.throughput.per_s < 0.1 * before


def test_a_queue_weighs_by_what_it_would_make_a_new_request_wait():
    # Two queueing proxies (timing out, still answering), 60 in flight each; one completes
    # 20 requests a second, the other 10: a new request would wait 3 s and 6 s.
    def saturated(per_tick: int) -> Observed:
        proxy = up_at(100)
        for i in range(WARM_WINDOWS):
            window = failed(1) + Tally(late_replies=per_tick)
            proxy = observe(proxy, window, 9_000 + 200 * i, S, inflight=60)
        return proxy

    fast, slow = saturated(4), saturated(2)
    now = 9_000 + 200 * (WARM_WINDOWS - 1)
    assert fast.throughput.per_s == pytest.approx(20, rel=0.05)
    assert fast.queue_wait_ms(now, S) == pytest.approx(3000, rel=0.05)
    assert slow.queue_wait_ms(now, S) == pytest.approx(6000, rel=0.05)
    weights = weigh({"sip:f": 1.0, "sip:s": 1.0}, set(), {"sip:f": fast, "sip:s": slow}, now, S)
    assert weights["sip:s"].weight == pytest.approx(weights["sip:f"].weight / 2, rel=0.05)
    # Not queueing, in-flight requests are not a queue (ringing calls): no queue wait.
    calm = observe(up_at(100), ok(1, 100), 9_000, S, heard=True, inflight=60)
    assert calm.queue_wait_ms(9_000, S) == 0
