"""A pair's floating address moving back while a node waits on a proxy's reply (issue 28's
hand-back), on loopback: node B advertises node A's address, as both nodes of a pair advertise
the floating one, so the proxy's replies to what B relayed reach A, which holds no such
transaction. With ``peers`` (each node naming the other), A passes the proven reply on to B,
whose transaction takes it; without, B hears nothing and retries the call on another proxy."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from counterpoise import processes
from tests.e2e import sipwire
from tests.e2e.conftest import Bed

pytestmark = pytest.mark.e2e


def answer_probes(request: bytes) -> list[bytes | float]:
    """A scripted pool proxy that answers its probes and nothing else: the test sends the
    INVITE's replies itself, where the floating address would take them."""
    if sipwire.method_of(request) in ("INVITE", "ACK"):
        return []
    return [sipwire.reply(request, 200, "OK")]


def replies_of(caller: sipwire.Peer, status: int, count: int, timeout_s: float) -> int:
    """How many replies of ``status`` the caller gets within ``timeout_s``, up to ``count``."""
    got, deadline = 0, time.monotonic() + timeout_s
    while got < count and (left := deadline - time.monotonic()) > 0:
        message = caller.recv(left)
        if message is not None and sipwire.status_of(message) == status:
            got += 1
    return got


def routes_both(bed: Bed, node: str, *uris: str) -> bool:
    """Whether ``node`` published each of ``uris`` up (its dialog keys are loaded by then)."""
    rows = bed.rows_published(node)
    return all(rows.get(uri, {}).get("state") in ("up", "slowstart") for uri in uris)


@pytest.fixture
def proxies() -> Iterator[tuple[sipwire.Responder, sipwire.Responder]]:
    """The proxy B picks (weight 1000) and the one it would retry on (0.001), closed after."""
    chosen, other = sipwire.Responder(answer_probes), sipwire.Responder(answer_probes)
    try:
        yield chosen, other
    finally:
        chosen.close()
        other.close()


@pytest.mark.parametrize(
    ("peers", "ringing"), [(True, False), (True, True), (False, False)], ids=["", "ringing", "off"]
)
def test_a_reply_that_reaches_the_other_node_is_passed_back_and_the_call_is_placed_once(
    bed: Bed, proxies: tuple[sipwire.Responder, sipwire.Responder], peers: bool, ringing: bool
) -> None:
    """``ringing``: the callee rings past B's first-reply timeout before it answers; the 180
    passed on is what keeps B from retrying."""
    port_a = processes.free_port()
    port_b = bed.start_balancer(
        name="lb_b",
        advertise=f"127.0.0.1:{port_a}",
        peers=f"udp:127.0.0.1:{port_a}" if peers else "",
    )
    node_b = bed.settings.node.node_name()
    bed.start_balancer(
        name="lb_a",
        listen=f"udp:127.0.0.1:{port_a}",
        advertise="",
        peers=f"udp:127.0.0.1:{port_b}" if peers else "",
    )
    chosen, other = proxies
    bed.store.add(chosen.uri, 1000.0)
    bed.store.add(other.uri, 0.001)
    for proxy in (chosen, other):
        bed.wait_state(proxy.uri, ("up", "slowstart"))
    processes.wait_for(lambda: routes_both(bed, node_b, chosen.uri, other.uri), 15, "B's pool")
    caller = sipwire.Peer()
    caller.send(
        sipwire.request("INVITE", "sip:bob@example.com", caller.address), ("127.0.0.1", port_b)
    )
    relayed = processes.wait_for(lambda: chosen.of_method("INVITE"), 5, "B's INVITE at the proxy")
    if ringing:
        chosen.peer.send(
            sipwire.reply(relayed[0], 180, "Ringing", tag="callee"), ("127.0.0.1", port_a)
        )
        assert replies_of(caller, 180, 2, 5) == 2  # from A, and from B's transaction
        time.sleep(bed.settings.failover.fr_timer_ms / 1000 + 0.5)  # the callee rings on
    chosen.peer.send(sipwire.reply(relayed[0], 200, "OK", tag="callee"), ("127.0.0.1", port_a))
    if peers:
        # One copy from A, forwarded by its next Via; one from B's transaction, which got
        # the copy A passed on: B's call is answered, and nothing is left to retry.
        assert replies_of(caller, 200, 2, 5) == 2
        assert bed.counters("cpedge", "lb_a").get("stray_forwarded") == (2 if ringing else 1)
        assert other.of_method("INVITE") == [] and len(chosen.of_method("INVITE")) == 1
    else:
        # B waits fr_timer_ms for a first reply, then retries: the call placed twice.
        processes.wait_for(lambda: other.of_method("INVITE"), 10, "B's retry on the other proxy")
