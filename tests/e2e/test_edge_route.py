"""The native edge checks of ``kamailio.cfg``'s request route, request by request, against a
real balancer: Max-Forwards, sanity, and the flood limits (route ``CP_FLOOD``). Raw UDP
requests from distinct loopback sources, answered by the balancer itself (its own OPTIONS,
an orphan CANCEL, an in-dialog request it refuses) so that each answer or silence says
whether the limit admitted the request."""

from __future__ import annotations

import time

import pytest
from harness import testbed

from counterpoise import processes
from tests.e2e import sipwire
from tests.e2e.conftest import Bed
from tests.e2e.test_security import balancer, edge_counters, one_proxy_pool

pytestmark = pytest.mark.e2e

FLOODER, OTHER = "127.0.0.4", "127.0.0.6"
SHED = (503, "Over Rate Limit")
ANSWER_S = 0.5
"""How long an answer the balancer owes is waited for; past it, silence is a drop."""


def window_start() -> None:
    """Wait for the start of a window of the balancer's (wall-clock, whole second) windows,
    so that what a test sends next falls in one window."""
    while time.time() % 1 > 0.05:
        time.sleep(0.01)


def next_window() -> None:
    time.sleep(1 - time.time() % 1 + 0.02)


class Source:
    """One source address sending requests to the balancer and reading its answers."""

    def __init__(self, bed: Bed, ip: str = FLOODER) -> None:
        self.bed = bed
        self.peer = sipwire.Peer(ip)

    def send(self, method: str, **kwargs: object) -> tuple[int, str] | None:
        """Send one request; the balancer's final answer (status, reason), or None."""
        ruri = kwargs.pop("ruri", f"sip:127.0.0.1:{self.bed.balancer_port}")
        message = sipwire.request(method, str(ruri), self.peer.address, **kwargs)  # type: ignore[arg-type]
        self.peer.send(message, balancer(self.bed))
        if method == "ACK":
            return None
        answer = self.peer.final_reply(ANSWER_S)
        if answer is None:
            return None
        status = sipwire.status_of(answer)
        reason = answer.split(b"\r\n", 1)[0].split(b" ", 2)[2].decode()
        return (status or 0), reason

    def options(self, count: int) -> list[tuple[int, str] | None]:
        return [self.send("OPTIONS") for _ in range(count)]

    def blast(self, count: int) -> None:
        """Send ``count`` OPTIONS at once, their answers read after (within the window)."""
        for _ in range(count):
            message = sipwire.request(
                "OPTIONS", f"sip:127.0.0.1:{self.bed.balancer_port}", self.peer.address
            )
            self.peer.send(message, balancer(self.bed))
        while self.peer.recv(0.1) is not None:
            pass


def counters(bed: Bed) -> dict[str, int]:
    return edge_counters(bed)


def test_too_many_hops_gets_483_and_goes_no_further(bed: Bed) -> None:
    ds = one_proxy_pool(bed)
    source = Source(bed)
    looped = sipwire.request("INVITE", "sip:bob@127.0.0.1", source.peer.address)
    source.peer.send(looped.replace(b"Max-Forwards: 70", b"Max-Forwards: 0"), balancer(bed))
    answer = source.peer.final_reply(ANSWER_S)
    assert answer is not None and answer.startswith(b"SIP/2.0 483 Too Many Hops")
    assert ds.counts().get("invite", 0) == 0


def test_a_malformed_request_is_answered_400_logged_and_goes_no_further(bed: Bed) -> None:
    ds = one_proxy_pool(bed)
    source = Source(bed, OTHER)
    invite = sipwire.request("INVITE", "sip:bob@127.0.0.1", source.peer.address)
    source.peer.send(invite.replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"), balancer(bed))
    answer = source.peer.final_reply(ANSWER_S)
    assert answer is not None and answer.startswith(b"SIP/2.0 400 ")
    # sanity_check sends the 400 itself, before the route logs it: the line may follow it
    logged = f"malformed request from {OTHER}, answered 400"
    processes.wait_for(
        lambda: any(logged in line for line in bed.log_lines()), ANSWER_S, "the 400 logged"
    )
    assert ds.counts().get("invite", 0) == 0


def test_a_source_over_its_limit_is_shed_and_admitted_again_next_window(bed: Bed) -> None:
    one_proxy_pool(bed, flood_requests_per_s=3)
    source, other = Source(bed), Source(bed, OTHER)
    window_start()
    assert source.options(3) == [(200, "OK")] * 3
    source.peer.send(
        sipwire.request("OPTIONS", f"sip:127.0.0.1:{bed.balancer_port}", source.peer.address),
        balancer(bed),
    )
    shed = source.peer.final_reply(ANSWER_S)
    assert shed is not None and sipwire.status_of(shed) == 503
    assert sipwire.header(shed, "Retry-After") == [b"1"]
    assert other.options(1) == [(200, "OK")]  # another source is not affected
    next_window()  # the next window admits the source again
    assert source.options(3) == [(200, "OK")] * 3
    found = counters(bed)
    assert found["shed"] == 1 and "banned" not in found and "dropped_banned" not in found


def test_requests_of_calls_in_progress_pass_up_to_twice_the_limit(bed: Bed) -> None:
    """Over the limit a new request is refused but the calls the source has can end: their
    ACK, CANCEL and in-dialog requests pass, up to the ceiling; past it nothing is answered."""
    one_proxy_pool(bed, flood_requests_per_s=5)
    source = Source(bed)
    window_start()
    assert source.options(5) == [(200, "OK")] * 5
    assert source.options(1) == [SHED]  # the 6th starts work: shed
    bye = source.send("BYE", to_tag="t", ruri="sip:bob@127.0.0.1")  # the 7th: in a dialog
    assert bye is not None and bye[0] in (403, 404)  # admitted, and refused as no dialog of ours
    assert source.send("ACK", to_tag="t", ruri="sip:bob@127.0.0.1") is None  # the 8th
    # The 9th and 10th, at the ceiling: orphan CANCELs, answered and sent on.
    assert [source.send("CANCEL", ruri="sip:bob@127.0.0.1") for _ in range(2)] == [(200, "OK")] * 2
    assert "dropped_flood" not in counters(bed)
    # The 11th, past twice the limit, and all after it: no answer at all.
    assert source.send("BYE", to_tag="t", ruri="sip:bob@127.0.0.1") is None
    assert source.send("INVITE", ruri="sip:bob@127.0.0.1") is None
    found = counters(bed)
    assert found["shed"] == 1 and found["dropped_flood"] == 2 and "banned" not in found


def test_a_source_past_twice_its_limit_windows_in_a_row_is_banned_and_ignored(bed: Bed) -> None:
    one_proxy_pool(bed, flood_requests_per_s=3, flood_ban_windows=2)
    source, other = Source(bed), Source(bed, OTHER)
    window_start()
    # The 7th is past the ceiling: one flooding window, dropped, not banned.
    assert source.options(7) == [(200, "OK")] * 3 + [SHED] * 3 + [None]
    assert "banned" not in counters(bed)
    next_window()
    assert source.options(7) == [(200, "OK")] * 3 + [SHED] * 3 + [None]  # two in a row
    assert source.options(1) == [None]  # banned: no reply at all
    next_window()  # a new window, but the ban holds
    assert source.options(1) == [None]
    assert other.options(1) == [(200, "OK")]  # another source is not affected
    found = counters(bed)
    assert found["banned"] == 1 and found["dropped_banned"] == 2
    assert found["shed"] == 6 and found["dropped_flood"] == 2
    banned = [line for line in bed.log_lines() if "banned for" in line]
    assert len(banned) == 1 and FLOODER in banned[0] and "60 s" in banned[0], banned


@pytest.mark.parametrize(
    ("ban_windows", "sent_per_window"),
    [
        (2, (7, 5, 7, 6, 7)),  # past the ceiling every other window only: the count starts again
        (0, (50,) * 5),  # 0: never banned
    ],
)
def test_no_ban_without_enough_flooding_windows_in_a_row(
    bed: Bed, ban_windows: int, sent_per_window: tuple[int, ...]
) -> None:
    one_proxy_pool(bed, flood_requests_per_s=3, flood_ban_windows=ban_windows)
    source = Source(bed)
    window_start()
    for sent in sent_per_window:
        source.blast(sent)
        next_window()
    assert source.options(1) == [(200, "OK")]
    assert "banned" not in counters(bed)


def test_registers_have_their_own_stricter_limit(bed: Bed) -> None:
    one_proxy_pool(bed, flood_registers_per_s=2, flood_ban_windows=1, location_server=False)
    source = Source(bed)
    registrar = "sip:example.com"
    window_start()
    for _ in range(2):  # relayed to the pool proxy
        assert source.send("REGISTER", ruri=registrar) != SHED
    assert source.options(1) == [(200, "OK")]  # other requests are under their own limit
    assert source.send("REGISTER", ruri=registrar, to_tag="t") == SHED  # a REGISTER is new work
    assert source.send("REGISTER", ruri=registrar) == SHED
    assert source.send("REGISTER", ruri=registrar) is None  # the 5th: past twice the limit
    found = counters(bed)
    assert found["banned"] == 1 and found["shed"] == 2 and found["dropped_flood"] == 1


@pytest.mark.parametrize("source_ip", ["127.0.0.8", "127.0.1.5"])
def test_trusted_upstreams_are_never_limited(bed: Bed, source_ip: str) -> None:
    one_proxy_pool(bed, flood_requests_per_s=1, trusted_upstreams="127.0.0.8,127.0.1.0/24")
    source, stranger = Source(bed, source_ip), Source(bed, "127.0.0.9")
    window_start()
    assert source.options(5) == [(200, "OK")] * 5
    assert stranger.options(2) == [(200, "OK"), SHED]  # the next address is not trusted
    rates = testbed.kamcmd(processes.ctl_socket(bed.run_dir / "balancer"), "htable.dump", "cprate")
    assert "127.0.0.9 " in rates and source_ip not in rates  # a trusted source is not counted


def test_pool_proxies_are_never_limited(bed: Bed) -> None:
    one_proxy_pool(bed, flood_requests_per_s=1)
    proxy = Source(bed, "127.0.0.10")
    bed.store.add(proxy.peer.uri, 1.0)  # in the pool, whatever its state
    pool = processes.ctl_socket(bed.run_dir / "balancer")
    key = f"{proxy.peer.address[0]}:{proxy.peer.address[1]}"
    processes.wait_for(
        lambda: key in testbed.kamcmd(pool, "htable.dump", "cpaddr"),
        10,
        "the timer process to publish the proxy's address",
    )
    window_start()
    assert proxy.options(5) == [(200, "OK")] * 5
    assert "shed" not in counters(bed) and "banned" not in counters(bed)
