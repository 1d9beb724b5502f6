"""Only the balancer's own dialogs pass: in-dialog requests against a real balancer, real or
scripted pool proxies and raw sockets. The attacks (a route set bounced through a pool
proxy, a fake dialog aimed at a drained proxy, a transport swapped in the Route) relay
nothing; real calls end in both directions, across failover, a node's restart and a key
rotation."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import random
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from harness import testbed

from counterpoise import processes
from counterpoise.core import dialog_seal
from tests.e2e import sipwire
from tests.e2e.conftest import Bed

pytestmark = pytest.mark.e2e

RING_RELOAD_S = 1.5
"""Every node reloads its key ring each second: a rotation is in force within this."""
QUIET_S = 1.0
"""How long a listener that must receive nothing is watched after the balancer answered."""
CALLEE_TAG = "callee"


def balancer(bed: Bed) -> sipwire.Address:
    return ("127.0.0.1", bed.balancer_port)


def answer_as_callee(request: bytes) -> list[bytes | float]:
    """A scripted pool proxy with its callee: 200 to probes, INVITEs and in-dialog requests."""
    method = sipwire.method_of(request)
    if method == "ACK":
        return []
    return [sipwire.reply(request, 200, "OK", tag=CALLEE_TAG if method == "INVITE" else "")]


def answer_503(request: bytes) -> list[bytes | float]:
    """A scripted pool proxy that cannot take calls (probes still answered)."""
    if sipwire.method_of(request) == "INVITE":
        return [sipwire.reply(request, 503, "Service Unavailable", tag="p")]
    return answer_as_callee(request)


def scripted_proxy(bed: Bed, answer=answer_as_callee, weight: float = 1.0) -> sipwire.Responder:
    proxy = sipwire.Responder(answer)
    bed.store.add(proxy.uri, weight)
    bed.wait_state(proxy.uri, ("up", "slowstart"))
    return proxy


@dataclasses.dataclass
class Dialog:
    caller: sipwire.Peer
    call_id: str
    from_tag: str
    routes: list[str]
    """The route set the caller uses: the 200's Record-Route entries, last first."""
    cseq: int = 1

    def request(self, method: str) -> bytes:
        """The next request of the caller (an ACK has the INVITE's CSeq)."""
        if method != "ACK":
            self.cseq += 1
        return sipwire.request(
            method,
            "sip:bob@127.0.0.1:9",
            self.caller.address,
            to_tag=CALLEE_TAG,
            from_tag=self.from_tag,
            call_id=self.call_id,
            cseq=1 if method == "ACK" else self.cseq,
            extra=[f"Route: {route}" for route in self.routes],
        )


def record_routes(reply: bytes) -> list[str]:
    return [
        part.strip()
        for line in sipwire.header(reply, "Record-Route")
        for part in line.decode().split(",")
    ]


def call(
    bed: Bed,
    caller: sipwire.Peer | None = None,
    call_id: str = "",
    wire: Callable[[bytes], bytes] = bytes,
) -> Dialog:
    """A call through the balancer from a raw caller, answered and ACKed; ``wire``: the bytes
    the caller puts on the wire for each message it sends."""
    caller = caller or sipwire.Peer()
    dialog = Dialog(caller, call_id or uuid.uuid4().hex, uuid.uuid4().hex[:10], [])
    invite = sipwire.request(
        "INVITE",
        "sip:bob@example.com",
        caller.address,
        from_tag=dialog.from_tag,
        call_id=dialog.call_id,
    )
    caller.send(wire(invite), balancer(bed))
    answer = caller.final_reply()
    assert answer is not None and sipwire.status_of(answer) == 200, answer
    dialog.routes = record_routes(answer)[::-1]  # a caller's route set: the 200's, reversed
    caller.send(wire(dialog.request("ACK")), balancer(bed))
    return dialog


def callee_bye(dialog: Dialog, sender: sipwire.Peer, routes: list[str]) -> bytes:
    """The callee's BYE, from ``sender``, to the caller's Contact, by ``routes``."""
    return sipwire.request(
        "BYE",
        f"sip:alice@{dialog.caller.address[0]}:{dialog.caller.address[1]}",
        sender.address,
        to_tag=dialog.from_tag,
        from_tag=CALLEE_TAG,
        call_id=dialog.call_id,
        extra=[f"Route: {route}" for route in routes],
    )


def status_of_request(dialog: Dialog, bed: Bed, method: str = "BYE") -> int | None:
    dialog.caller.send(dialog.request(method), balancer(bed))
    return sipwire.status_of(dialog.caller.final_reply() or b"")


def seal_of(route: str) -> dict[str, str]:
    return dict(re.findall(r";(cp[dpc]3?)=([^;>]+)", route))


@contextlib.contextmanager
def tcp_listener(port: int) -> Iterator[socket.socket]:
    """A TCP socket listening on 127.0.0.1:``port`` (beside a UDP proxy on the same port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(8)
    sock.settimeout(QUIET_S)
    try:
        yield sock
    finally:
        sock.close()


@contextlib.contextmanager
def udp_and_tcp_sink(tries: int = 20) -> Iterator[tuple[sipwire.Peer, socket.socket]]:
    """A UDP peer and a TCP listener on the same port: the kernel picks the UDP port, which a
    TCP socket of another process may hold already; then another port is taken."""
    for _ in range(tries):
        peer = sipwire.Peer()
        try:
            listening = tcp_listener(peer.address[1])
            listener = listening.__enter__()
        except OSError as error:
            peer.close()
            if error.errno != errno.EADDRINUSE:
                raise
            continue
        try:
            yield peer, listener
        finally:
            listening.__exit__(None, None, None)
            peer.close()
        return
    raise RuntimeError(f"no port free for both UDP and TCP in {tries} tries")


def accepts(listener: socket.socket) -> bool:
    try:
        conn, _ = listener.accept()
    except TimeoutError:
        return False
    conn.close()
    return True


# --- real calls --------------------------------------------------------------------------------


def test_a_call_ends_from_either_side_and_its_record_route_is_sealed(bed: Bed) -> None:
    bed.start_balancer()
    proxy = scripted_proxy(bed)
    dialog = call(bed)
    (route,) = dialog.routes
    sealed = seal_of(route)
    assert sealed["cpp"] == f"sip:udp:{proxy.peer.address[0]}:{proxy.peer.address[1]}"
    assert sealed["cpc"] == f"udp:{dialog.caller.address[0]}:{dialog.caller.address[1]}"
    assert re.fullmatch(r"1\.[0-9a-f]{33}", sealed["cpd3"])
    assert status_of_request(dialog, bed, "INFO") == 200
    # The callee hangs up: its proxy sends the BYE to the balancer, which sends it to the
    # address the caller called from.
    proxy.peer.send(callee_bye(dialog, proxy.peer, [route]), balancer(bed))
    received = dialog.caller.recv(5.0)
    assert received is not None and sipwire.method_of(received) == "BYE"
    processes.wait_for(lambda: proxy.of_method("ACK"), 5, "the ACK at the proxy")
    methods = sorted(sipwire.method_of(r) for r in proxy.requests)
    assert [m for m in methods if m != "OPTIONS"] == ["ACK", "INFO", "INVITE"]
    proxy.close()


def test_sipp_calls_through_a_real_proxy_complete_with_ack_and_bye(bed: Bed) -> None:
    ds = bed.start_downstream("ds1")
    bed.start_balancer()
    bed.add_pool((ds, 1.0))
    result = bed.caller(calls=10, rate=10).wait(30)
    assert (result.successful, result.failed) == (10, 0), result.output[-2000:]
    counts = ds.counts()
    assert counts["ack"] == counts["bye"] == counts["invite"] == 10, counts


def test_the_callee_behind_a_real_proxy_hangs_up_through_the_balancer(bed: Bed) -> None:
    """The callee's BYE follows the route set a real proxy (``downstream/proxy.cfg``) and the
    balancer recorded: the proxy's loose_route hands it to the balancer, which sends it to
    the caller."""
    callee = sipwire.Responder(answer_as_callee)
    bed.uas_uri = callee.uri
    ds = bed.start_downstream("ds1")
    bed.start_balancer()
    bed.add_pool((ds, 1.0))
    dialog = call(bed)
    (invite,) = callee.of_method("INVITE")
    routes = record_routes(invite)  # the proxy's, then the balancer's
    assert len(routes) == 2 and "cpd3=" in routes[1]
    callee.peer.send(callee_bye(dialog, callee.peer, routes), ("127.0.0.1", ds.port))
    received = dialog.caller.recv(5.0)
    assert received is not None and sipwire.method_of(received) == "BYE"
    callee.close()


def test_the_callee_behind_a_tcp_proxy_hangs_up_from_the_proxys_own_port(bed: Bed) -> None:
    """Over a connection a proxy is known by its host alone: its BYE comes from whatever
    port its connection has, and the config's route admits it by its host."""
    callee = sipwire.Responder(answer_as_callee)
    bed.uas_uri = callee.uri
    bed.start_balancer(listen="udp:127.0.0.1:{port},tcp:127.0.0.1:{port}")
    ds = bed.start_downstream("tcp", transport="tcp")
    bed.add_pool((ds, 1.0))
    dialog = call(bed)
    (invite,) = callee.of_method("INVITE")
    routes = record_routes(invite)  # the proxy's two (UDP to the callee), the balancer's two
    assert len(routes) == 4 and "transport=tcp" in routes[2] and "cpd3=" in routes[2]
    callee.peer.send(callee_bye(dialog, callee.peer, routes), ("127.0.0.1", ds.port))
    received = dialog.caller.recv(5.0)
    assert received is not None and sipwire.method_of(received) == "BYE"
    callee.close()


def test_both_record_routes_of_a_transport_change_carry_the_seal(bed: Bed) -> None:
    """UDP caller, TCP proxy: the balancer records itself twice (``enable_double_rr``), each
    entry sealed alike with the proxy's transport; the caller's BYE passes by either."""
    bed.start_balancer(listen="udp:127.0.0.1:{port},tcp:127.0.0.1:{port}")
    ds = bed.start_downstream("tcp", transport="tcp")
    bed.add_pool((ds, 1.0))
    dialog = call(bed)
    ours = [route for route in dialog.routes if "cpd3=" in route]
    assert len(ours) == 2 and "transport=tcp" in ours[1] and "transport=tcp" not in ours[0]
    assert seal_of(ours[0]) == seal_of(ours[1])
    assert seal_of(ours[0])["cpp"] == f"sip:tcp:127.0.0.1:{ds.port}"
    assert status_of_request(dialog, bed) == 200
    assert ds.counts()["bye"] == 1


def test_failover_seals_the_proxy_that_took_the_call(bed: Bed) -> None:
    bed.start_balancer()
    failing = scripted_proxy(bed, answer_503, weight=1000.0)
    taking = scripted_proxy(bed, weight=0.001)
    dialog = call(bed)
    first, second = failing.of_method("INVITE"), taking.of_method("INVITE")
    assert len(first) == 1 and len(second) == 1
    (first_route,) = record_routes(first[0])
    (second_route,) = record_routes(second[0])  # one Record-Route of the balancer's, not two
    assert seal_of(first_route)["cpp"].endswith(f":{failing.peer.address[1]}")
    assert seal_of(second_route)["cpp"].endswith(f":{taking.peer.address[1]}")
    assert dialog.routes == [second_route]
    assert status_of_request(dialog, bed) == 200
    assert len(taking.of_method("BYE")) == 1 and failing.of_method("BYE") == []
    failing.close()
    taking.close()


def test_a_call_ends_after_its_node_restarted(bed: Bed) -> None:
    bed.start_balancer()
    node = bed._procs[-1]
    proxy = scripted_proxy(bed)
    dialog = call(bed)
    port = bed.balancer_port
    node.stop()
    bed.start_balancer(listen=f"udp:127.0.0.1:{port}")
    bed.balancer_port = port
    processes.wait_for(lambda: proxy.uri in bed.rows_published(), 15, "the restarted node")
    assert status_of_request(dialog, bed) == 200
    assert len(proxy.of_method("BYE")) == 1
    proxy.close()


def test_a_node_that_has_not_read_the_key_ring_answers_503_and_relays_nothing(
    bed: Bed,
) -> None:
    """A node started while its Redis is away cannot check a seal yet: 503, which a later
    try may pass, not the 403 of a seal that is wrong."""
    first = bed.start_balancer(name="lb1")
    proxy = scripted_proxy(bed)
    dialog = call(bed)
    away = f"redis://127.0.0.1:{processes.free_port()}/0"
    second = bed.start_balancer(name="lb2", redis_url=away)
    processes.wait_for(
        lambda: any("dialog keys" in line for line in bed.log_lines("lb2")),
        15,
        "the second node's failed read of the key ring",
    )
    dialog.routes = [r.replace(f":{first};", f":{second};") for r in dialog.routes]
    assert status_of_request(dialog, bed) == 503
    assert status_of_request(dialog, bed, "INFO") == 503
    assert proxy.of_method("BYE") == [] and proxy.of_method("INFO") == []
    assert bed.counters("cpedge", "lb2") == {"relay_denied": 2}
    proxy.close()


def test_a_second_node_checks_the_first_nodes_dialogs(bed: Bed) -> None:
    """The seal binds the dialog, not the node: behind an address both nodes advertise, the
    other node takes the dialog (here its own address is put in the Route, as that would)."""
    first = bed.start_balancer(name="lb1")
    proxy = scripted_proxy(bed)
    dialog = call(bed)
    second = bed.start_balancer(name="lb2")
    processes.wait_for(lambda: proxy.uri in bed.rows_published(), 15, "the second node")
    dialog.routes = [r.replace(f":{first};", f":{second};") for r in dialog.routes]
    assert status_of_request(dialog, bed) == 200
    assert len(proxy.of_method("BYE")) == 1
    assert sorted(bed.counters("cpedge", "lb1")) == sorted(bed.counters("cpedge", "lb2")) == []
    proxy.close()


def test_calls_survive_a_key_rotation_and_the_oldest_key_expires(bed: Bed) -> None:
    bed.start_balancer()
    proxy = scripted_proxy(bed)
    before = call(bed)
    rotated = bed.cli("dialog-key", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    after = processes.wait_for(
        lambda: (d := call(bed)) and seal_of(d.routes[0])["cpd3"].startswith("2.") and d,
        dialog_seal.ACTIVATION_DELAY_MS / 1000 + RING_RELOAD_S,
        "a new call sealed with the new key",
        step_s=0.25,
    )
    assert seal_of(before.routes[0])["cpd3"].startswith("1.")
    assert seal_of(after.routes[0])["cpd3"].startswith("2.")
    assert status_of_request(before, bed) == 200
    assert status_of_request(after, bed) == 200
    for _ in range(2):  # the third rotation drops key 1
        assert bed.cli("dialog-key", "rotate").returncode == 0
    processes.wait_for(
        lambda: status_of_request(before, bed, "INFO") == 403,
        RING_RELOAD_S,
        "the dialog sealed with the dropped key refused",
        step_s=0.25,
    )
    assert status_of_request(after, bed, "INFO") == 200
    proxy.close()


def ring_secret(bed: Bed, key_id: str = "1") -> bytes:
    """A key of the ring as the node holds it (``<active from> <secret hex>``)."""
    dump = testbed.kamcmd(processes.ctl_socket(bed.run_dir / "balancer"), "htable.dump", "cpkey")
    values = dict(re.findall(r"name: (\S+)\s+value: ([^\n]+)", dump))
    return bytes.fromhex(values[key_id].split()[1])


def test_the_config_seals_as_the_core_defines_and_passes_the_seals_of_the_versions_before(
    bed: Bed,
) -> None:
    """Kamailio's routes make and check the seal (``embed/counterpoise-dialog.cfg``): what they
    make verifies by ``core.dialog_seal``'s definition; a dialog sealed before an upgrade
    (``cpd2``, or ``cpd`` before it) still ends, in Python, and a forged one does not."""
    bed.start_balancer()
    proxy = scripted_proxy(bed)
    dialog = call(bed)
    secret = ring_secret(bed)
    (route,) = dialog.routes
    seal = dialog_seal.read_seal(route.strip("<>"), dialog.call_id, {"1": secret}.get)
    assert seal is not None and seal.proxy == dialog_seal.proxy_hop(proxy.uri)
    assert seal.caller == dialog_seal.caller_hop("udp", *dialog.caller.address)
    mac = dialog_seal.native_mac(secret, b"cpd3", seal.fields())
    assert seal_of(route)["cpd3"] == f"1.{mac}"
    v2_mac = dialog_seal.native_mac_v2(secret, b"cpd2", seal.fields())
    v1_mac = dialog_seal.signature_v1(secret, seal)
    for param, old_mac in (("cpd2", v2_mac), ("cpd", v1_mac)):
        old = route.replace(f";cpd3=1.{mac}", f";{param}=1.{old_mac}")
        dialog.routes = [re.sub(rf"{param}=1\.[^;>]", f"{param}=1.!", old)]
        assert status_of_request(dialog, bed, "INFO") == 403
        dialog.routes = [old]
        assert status_of_request(dialog, bed, "INFO") == 200
    assert status_of_request(dialog, bed) == 200
    assert [len(proxy.of_method(m)) for m in ("INFO", "BYE")] == [2, 1]
    proxy.close()


def test_an_altered_seal_is_refused_by_the_config_and_relays_nothing(bed: Bed) -> None:
    bed.start_balancer()
    proxy = scripted_proxy(bed)
    sink = sipwire.Peer()
    dialog = call(bed)
    secret = ring_secret(bed)
    (route,) = dialog.routes
    sealed = seal_of(route)
    at_sink = sink.uri.split(":", 1)[1]
    seal = dialog_seal.read_seal(route.strip("<>"), dialog.call_id, {"1": secret}.get)
    assert seal is not None
    wrong_key = dialog_seal.native_mac(bytes(32), b"cpd3", seal.fields())
    other_mac = sealed["cpd3"][:-1] + ("0" if sealed["cpd3"].endswith("1") else "1")
    altered = [
        route.replace(sealed["cpd3"], other_mac),
        route.replace(sealed["cpd3"], f"1.{wrong_key}"),
        route.replace(sealed["cpd3"], "9." + sealed["cpd3"][2:]),
        route.replace(sealed["cpd3"], "x." + sealed["cpd3"][2:]),
        route.replace(sealed["cpp"], f"sip:udp:{at_sink}"),
        route.replace(sealed["cpc"], f"udp:{at_sink}"),
        route.replace(f"ftag={dialog.from_tag}", "ftag=other"),
        route.replace(";cpp=", ";cpx="),
    ]
    denied = bed.counters("cpedge").get("relay_denied", 0)
    for forged in altered:
        dialog.routes = [forged]
        assert status_of_request(dialog, bed, "INFO") == 403, forged
        dialog.caller.send(dialog.request("ACK"), balancer(bed))  # refused without a reply
    assert dialog.caller.recv(QUIET_S) is None
    assert sink.recv(QUIET_S) is None
    methods = [sipwire.method_of(r) for r in proxy.requests]
    assert [m for m in methods if m != "OPTIONS"] == ["INVITE", "ACK"]  # the call's own
    assert bed.counters("cpedge")["relay_denied"] == denied + 2 * len(altered)
    proxy.close()


def test_a_call_too_long_to_sign_is_unsealed_and_no_seal_passes_for_its_call_id(
    bed: Bed,
) -> None:
    """Past Kamailio's ``pv_buffer_size`` (8192 bytes) the signed message cannot be formatted:
    the branch is recorded unsealed and its in-dialog requests are refused. A failed format is
    never signed, so another dialog's valid seal does not pass for a Call-ID that long either,
    even in the worker that has just checked that seal (each of the four may take it)."""
    bed.start_balancer()
    proxy = scripted_proxy(bed)
    huge = "c" * 9000
    unsealed = bed.counters("cpedge").get("unsealed", 0)
    long_call = call(bed, call_id=huge)
    assert long_call.routes and not any("cpd3=" in route for route in long_call.routes)
    assert bed.counters("cpedge")["unsealed"] == unsealed + 1
    assert status_of_request(long_call, bed, "INFO") == 403
    normal = call(bed)
    forged = Dialog(normal.caller, huge, normal.from_tag, normal.routes)
    for _ in range(8):
        assert status_of_request(normal, bed, "INFO") == 200
        assert status_of_request(forged, bed, "INFO") == 403
    infos = proxy.of_method("INFO")
    assert len(infos) == 8 and not any(huge.encode() in info for info in infos)
    proxy.close()


# --- attacks -----------------------------------------------------------------------------------


def test_route_set_bounced_through_a_pool_proxy_reaches_nothing(bed: Bed) -> None:
    ds = bed.start_downstream("ds1")
    bed.start_balancer()
    bed.add_pool((ds, 1.0))
    sink, attacker = sipwire.Peer(), sipwire.Peer()
    lb = f"<sip:127.0.0.1:{bed.balancer_port};lr>"
    bounce = [lb, f"<{ds.uri};lr>", lb, f"<{sink.uri};lr>"]
    forged = sipwire.request(
        "INVITE", sink.uri, attacker.address, to_tag="x", extra=[f"Route: {r}" for r in bounce]
    )
    attacker.send(forged, balancer(bed))
    assert sipwire.status_of(attacker.final_reply() or b"") == 403
    # With the seal of the attacker's own call: the balancer sends it to that call's proxy,
    # whose loose_route hands it back; from the pool, a caller's request goes nowhere.
    dialog = call(bed, attacker)
    ours = next(route for route in dialog.routes if "cpd3=" in route)
    dialog.routes = [ours, f"<{ds.uri};lr>", ours, f"<{sink.uri};lr>"]
    assert status_of_request(dialog, bed, "INVITE") == 403
    assert sink.recv(QUIET_S) is None
    assert bed.counters("cpedge").get("relay_denied", 0) >= 2


def test_fake_dialog_aimed_at_a_drained_proxy_reaches_nothing(bed: Bed) -> None:
    bed.start_balancer()
    drained = scripted_proxy(bed)
    assert bed.cli("proxy", "drain", drained.uri).returncode == 0
    attacker = sipwire.Peer()
    lb = f"sip:127.0.0.1:{bed.balancer_port}"
    for routes in ([drained.uri], [lb, drained.uri], [drained.uri]):
        fake = sipwire.request("INVITE", drained.uri, attacker.address, to_tag="made-up",
                               routes=routes)  # fmt: skip
        attacker.send(fake, balancer(bed))
        assert sipwire.status_of(attacker.final_reply() or b"") == 403
    time.sleep(QUIET_S)
    assert drained.of_method("INVITE") == []
    drained.close()


def test_transport_swapped_in_the_route_opens_no_connection(bed: Bed) -> None:
    bed.start_balancer()
    proxy = scripted_proxy(bed)
    host, port = proxy.peer.address
    swapped = f"<sip:{host}:{port};transport=tcp;lr>"
    with tcp_listener(port) as listener:
        attacker = sipwire.Peer()
        forged = sipwire.request(
            "INVITE", f"sip:x@{host}:{port}", attacker.address, to_tag="x",
            extra=[f"Route: <sip:127.0.0.1:{bed.balancer_port};lr>", f"Route: {swapped}"],
        )  # fmt: skip
        attacker.send(forged, balancer(bed))
        assert sipwire.status_of(attacker.final_reply() or b"") == 403
        # A sealed Route sends on the proxy's own transport, whatever follows it.
        dialog = call(bed, attacker)
        dialog.routes = [*dialog.routes, swapped]
        assert status_of_request(dialog, bed) == 200
        assert not accepts(listener)
    assert len(proxy.of_method("BYE")) == 1
    proxy.close()


FUZZ_REQUESTS = 400
SEED = 20261206


def test_fuzzed_in_dialog_requests_reach_no_host_outside_the_pool(bed: Bed) -> None:
    """Random route sets, tags, transports, schemes and Call-IDs, some carrying a real call's
    seal cut, spliced or replayed: nothing reaches the sink (UDP or TCP), and the proxy gets
    only requests of the real dialog."""
    bed.start_balancer(flood_requests_per_s=0)
    proxy = scripted_proxy(bed)
    attacker = sipwire.Peer("127.0.0.5")
    dialog = call(bed, attacker)
    real = dialog.routes[0]
    lb = f"127.0.0.1:{bed.balancer_port}"
    rng = random.Random(SEED)
    with udp_and_tcp_sink() as (sink, listener):
        for number in range(FUZZ_REQUESTS):
            route = _fuzzed_route(rng, real, lb, sink.uri, proxy.uri)
            call_id = rng.choice([dialog.call_id, uuid.uuid4().hex, dialog.call_id + "x"])
            tags = [dialog.from_tag, CALLEE_TAG, "t" + str(rng.randrange(99))]
            method = rng.choice(["INVITE", "BYE", "ACK", "INFO", "UPDATE", "NOTIFY", "REFER"])
            forged = sipwire.request(
                method, rng.choice([sink.uri, proxy.uri, f"sip:{lb}"]), attacker.address,
                to_tag=rng.choice(tags), from_tag=rng.choice(tags), call_id=call_id,
                extra=[f"Route: {part}" for part in route], cseq=number + 10,
            )  # fmt: skip
            attacker.send(forged, balancer(bed))
            if number % 20 == 19:
                time.sleep(0.05)
        time.sleep(QUIET_S)
        assert sink.recv(QUIET_S) is None
        assert not accepts(listener)
    for request in proxy.requests:
        if sipwire.method_of(request) != "OPTIONS":
            assert dialog.call_id.encode() in request and dialog.from_tag.encode() in request
    proxy.close()


def _fuzzed_route(rng: random.Random, real: str, lb: str, sink: str, proxy: str) -> list[str]:
    sealed = real.strip("<>")
    mutations = [
        lambda: sealed,
        lambda: sealed.replace("cpp=sip:udp", "cpp=sip:tcp"),
        lambda: sealed.replace("cpp=sip:", "cpp=sips:"),
        lambda: re.sub(r"cpp=[^;>]+", f"cpp=sip:udp:{sink.split(':', 1)[1]}", sealed),
        lambda: re.sub(r"cpc=[^;>]+", f"cpc=udp:{sink.split(':', 1)[1]}", sealed),
        lambda: re.sub(r"cpd3=1\.[^;>]", "cpd3=1.!", sealed),
        lambda: re.sub(r"ftag=[^;>]+", "ftag=t1", sealed),
        lambda: f"sip:{lb};lr",
        lambda: f"sips:{lb};lr",
    ]
    hops = [
        lambda: f"{sink};lr",
        lambda: f"{sink};transport={rng.choice(['tcp', 'tls', 'udp', 'sctp'])};lr",
        lambda: f"{proxy};transport=tcp;lr",
        lambda: f"{proxy};lr",
        lambda: sink.replace("sip:", "sips:") + ";lr",
    ]
    route = [rng.choice(mutations)()]
    for _ in range(rng.randrange(4)):
        route.append(rng.choice(mutations + hops)())
    return [f"<{part}>" for part in route]


def test_a_dialog_whose_ids_are_not_utf8_stalls_no_event_of_the_timer(bed: Bed) -> None:
    """A caller's own dialog whose Call-ID holds bytes that are not UTF-8 (a From tag that
    is not is refused, 400, before any seal): its sealed ACK and BYE queue events for the
    timer process, which must neither stop on them nor leave the calls after them uncounted
    (the queue carries every 2xx's outcome too)."""
    bed.start_balancer()
    proxy = scripted_proxy(bed)

    def raw(message: bytes) -> bytes:
        return message.replace(b"oddcall-", b"\xff\xfe-")

    odd = call(bed, call_id="oddcall-" + uuid.uuid4().hex, wire=raw)
    odd.caller.send(raw(odd.request("BYE")), balancer(bed))
    bye_answer = odd.caller.final_reply()
    assert bye_answer is not None and sipwire.status_of(bye_answer) == 200, bye_answer
    # The calls after it: their records confirmed, their outcomes counted.
    for _ in range(3):
        call(bed)
    processes.wait_for(
        lambda: bed.counters("cploc").get("confirmed", 0) >= 3,
        10,
        "the three calls' records confirmed",
    )
    processes.wait_for(
        lambda: (
            bed.rows_published().get(proxy.uri, {}).get("totals", {}).get("requests_ok", 0) >= 4
        ),
        10,
        "the four calls' outcomes counted",
    )
    assert not [name for name in bed.counters("cpedge") if name.startswith("error_")]
    proxy.close()
