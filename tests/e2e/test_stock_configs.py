"""Kamailio's own example configs, as Debian ships them, run as operators run them: the KEMI
Python example with its MySQL-backed features on a real MariaDB made by Kamailio's tools,
the native kamailio.cfg with the same features and with its defaults. Subscribers register
and call each other through them, and their own replies hold (Max-Forwards, sanity, digest
challenges, IP authorisation). The ground the embedding tests stand on."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from harness import mariadb, stock, testbed

from counterpoise import processes

from . import sipwire

USERS = {"alice": "alice-secret", "bob": "bob-secret"}
SUBSCRIBERS = list(USERS.items())
DOMAIN = "127.0.0.1"
"""The realm the configs challenge with: the From domain, their own address."""

MARKER = "# An operator's line: the stock file takes patches."
MARKER_PATCH = """\
--- a/{name}
+++ b/{name}
@@ -1,6 +1,7 @@

 ####### Include Local Config If Exists #########
 import_file "kamailio-local.cfg"
+{marker}

 ####### Defined Values #########

"""
"""A comment after the line both stock configs share: the way the embedding's lines go in."""

CONFIGS = [stock.KEMI_PYTHON, stock.NATIVE_DB, stock.NATIVE]


def having(feature: str) -> pytest.MarkDecorator:
    """Run a test on the configs with ``feature`` on only (the stock native defaults have none
    of the database features)."""
    configs = [config for config in CONFIGS if feature in config.defines()]
    return pytest.mark.parametrize("proxy", configs, indirect=True, ids=lambda c: c.name)


def marker_patch(config: stock.StockConfig, marker: str = MARKER) -> str:
    return MARKER_PATCH.format(name=config.cfg.name, marker=marker)


@pytest.fixture(scope="module", params=CONFIGS, ids=lambda config: config.name)
def proxy(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[stock.StockKamailio]:
    config: stock.StockConfig = request.param
    folder = tmp_path_factory.mktemp(config.name)
    with stock.running(config, folder, SUBSCRIBERS, [marker_patch(config)]) as kamailio:
        yield kamailio


def started_here(folder: Path) -> list[str]:
    """Processes still running whose command line names ``folder``."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or ())
        if str(folder) in cmdline and processes.running(proc.pid):
            found.append(cmdline)
    return found


def test_the_copy_is_the_shipped_file_with_the_patch(proxy: stock.StockKamailio) -> None:
    shipped = proxy.config.cfg.read_text().splitlines()
    running = proxy.cfg.read_text().splitlines()
    assert [line for line in running if line != MARKER] == shipped
    assert running.count(MARKER) == 1


def alice_calls_bob(
    proxy: stock.StockKamailio, run_dir: Path, bob_contact_ip: str = ""
) -> testbed.CallResult:
    """Bob registers (his Contact naming ``bob_contact_ip`` if given) and takes calls on one
    port, Alice registers and calls him from another; her call's result."""
    bob_port, alice_port = processes.free_port(), processes.free_port()
    registered = stock.register(proxy, run_dir, "bob", USERS["bob"], bob_port, bob_contact_ip)
    assert registered.successful == 1, registered.output[-2000:]
    bob = testbed.start_uas(bob_port, run_dir)
    try:
        registered = stock.register(proxy, run_dir, "alice", USERS["alice"], alice_port)
        assert registered.successful == 1, registered.output[-2000:]
        return stock.call(proxy, run_dir, "alice", USERS["alice"], "bob", alice_port)
    finally:
        bob.stop()


def test_a_subscriber_calls_another(proxy: stock.StockKamailio, tmp_path: Path) -> None:
    """REGISTER and INVITE challenged and answered from the subscriber table, the call
    routed by Bob's location, ACK and BYE by the Record-Route set."""
    result = alice_calls_bob(proxy, tmp_path)
    assert (result.successful, result.failed) == (1, 0), result.output[-2000:]
    assert "Unhandled exception" not in proxy.log()
    if proxy.db is not None and "WITH_ACCDB" in proxy.config.defines():
        # Accounted in the table, in the columns the config's comments asked the operator for.
        rows = proxy.db.sql("SELECT method, sip_code, src_user, dst_ouser FROM acc").splitlines()
        assert {"INVITE\t200\talice\tbob", "BYE\t200\talice\tbob"} <= set(rows), rows


RTPPROXY_DISABLED = "support for RTP proxy <udp:127.0.0.1:7722> has been disabled"
"""What WITH_NAT's rtpproxy module logs at start-up when no rtpproxy answers: Debian 12 ships
none. Its rtpproxy_manage() then fails, the configs ignore that, and media goes direct."""


@having("WITH_NAT")
def test_a_subscriber_behind_nat_is_called_where_she_registered_from(
    proxy: stock.StockKamailio, tmp_path: Path
) -> None:
    """WITH_NAT: Bob's Contact names a private address; the config keeps the address his
    REGISTER came from (fix_nated_register) and calls him there. No rtpproxy runs: the call
    still completes, its media unrelayed."""
    result = alice_calls_bob(proxy, tmp_path, bob_contact_ip="192.168.1.10")
    assert (result.successful, result.failed) == (1, 0), result.output[-2000:]
    assert RTPPROXY_DISABLED in proxy.log()


@having("WITH_AUTH")
def test_a_wrong_password_is_refused(proxy: stock.StockKamailio, tmp_path: Path) -> None:
    port = processes.free_port()
    result = stock.register(proxy, tmp_path, "alice", "not-her-password", port)
    assert (result.successful, result.failed) == (0, 1), result.output[-2000:]


def options(proxy: stock.StockKamailio, edit: tuple[bytes, bytes]) -> bytes | None:
    """An OPTIONS to a user of the proxy with one header line replaced; the final reply."""
    peer = sipwire.Peer()
    try:
        message = sipwire.request("OPTIONS", f"sip:bob@{proxy.target}", peer.address)
        assert edit[0] in message
        peer.send(message.replace(*edit), proxy.address)
        return peer.final_reply(5.0)
    finally:
        peer.close()


def test_max_forwards_zero_gets_483(proxy: stock.StockKamailio) -> None:
    reply = options(proxy, (b"Max-Forwards: 70", b"Max-Forwards: 0"))
    assert reply is not None and sipwire.status_of(reply) == 483, reply


def test_a_malformed_request_gets_400_from_sanity(proxy: stock.StockKamailio) -> None:
    """The CSeq names another method than the request's (sanity's cseq_method check)."""
    reply = options(proxy, (b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE"))
    assert reply is not None and sipwire.status_of(reply) == 400, reply


def invite(proxy: stock.StockKamailio, source_ip: str = "127.0.0.1") -> bytes | None:
    """An INVITE from Alice (a user of the proxy's domain) with no credentials, to Carol,
    who is not registered; the final reply."""
    peer = sipwire.Peer(source_ip)
    try:
        message = sipwire.request("INVITE", f"sip:carol@{proxy.target}", peer.address)
        message = message.replace(b"@example.com>", f"@{proxy.target}>".encode())
        peer.send(message, proxy.address)
        return peer.final_reply(5.0)
    finally:
        peer.close()


def test_an_unauthenticated_invite_is_challenged(proxy: stock.StockKamailio) -> None:
    reply = invite(proxy)
    assert reply is not None
    if proxy.config.authenticates():
        assert sipwire.status_of(reply) == 407, reply
        (challenge,) = sipwire.header(reply, "Proxy-Authenticate")
        assert f'realm="{DOMAIN}"'.encode() in challenge
    else:  # nothing to authenticate: its location lookup answers
        assert sipwire.status_of(reply) == 404, reply


@having("WITH_IPAUTH")
def test_an_address_of_the_address_table_calls_unchallenged(proxy: stock.StockKamailio) -> None:
    """WITH_IPAUTH: a source in the address table's group 1 (a trunk) is let in without
    credentials; reaching Carol's location lookup, it gets 404 where others get 407."""
    assert proxy.db is not None, "WITH_IPAUTH reads its address table from the database"
    trunk = "127.0.0.2"
    proxy.db.sql(f"INSERT INTO address (grp, ip_addr, mask, port) VALUES (1, '{trunk}', 32, 0)")
    ctl = proxy.run_dir / "kamailio_ctl"
    testbed.kamcmd(ctl, "permissions.addressReload")
    try:
        reply = invite(proxy, trunk)
        assert reply is not None and sipwire.status_of(reply) == 404, reply
    finally:
        proxy.db.sql(f"DELETE FROM address WHERE ip_addr = '{trunk}'")
        testbed.kamcmd(ctl, "permissions.addressReload")


@having("WITH_ANTIFLOOD")
def test_a_flooding_source_is_banned(proxy: stock.StockKamailio) -> None:
    """WITH_ANTIFLOOD: pike bans a source sending more than 16 requests in 2 s; its later
    requests go unanswered. (Sources the config counts as itself, such as its own 127.0.0.1,
    are exempt: the load tests' callers.)"""
    peer = sipwire.Peer("127.0.0.3")
    try:
        replies = 0
        for _ in range(40):
            peer.send(
                sipwire.request("OPTIONS", f"sip:{proxy.target}", peer.address), proxy.address
            )
            replies += peer.final_reply(0.2) is not None
        assert 0 < replies < 40
        peer.send(sipwire.request("OPTIONS", f"sip:{proxy.target}", peer.address), proxy.address)
        assert peer.final_reply(1.0) is None
    finally:
        peer.close()


def test_a_failed_start_leaves_nothing_running(tmp_path: Path) -> None:
    """Kamailio dies at start-up (a patch breaks its config) after its MariaDB started:
    the error names it, and neither is left running."""
    broken = marker_patch(stock.KEMI_PYTHON, "this is not a config line")
    with (
        pytest.raises(processes.StartError, match="exited at start-up"),
        stock.running(stock.KEMI_PYTHON, tmp_path, SUBSCRIBERS, [broken]),
    ):
        pass
    assert started_here(tmp_path) == []


def test_a_server_that_cannot_listen_is_reported_and_gone(tmp_path: Path) -> None:
    server = mariadb.MariaDB(tmp_path)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", server.port))
        squatter.listen()
        with pytest.raises(processes.StartError, match="mariadbd exited at start-up"):
            server.start()
    assert started_here(tmp_path) == []


def test_a_failed_provisioning_stops_the_database(tmp_path: Path) -> None:
    with (
        pytest.raises(processes.StartError, match="already exists"),
        mariadb.running(tmp_path, [("alice", "one"), ("alice", "two")]),
    ):
        pass
    assert started_here(tmp_path) == []


@pytest.mark.parametrize("config", [stock.KEMI_PYTHON, stock.NATIVE], ids=lambda c: c.name)
def test_a_patch_that_no_longer_fits_fails_loudly(
    config: stock.StockConfig, tmp_path: Path
) -> None:
    """A patch written for another version of the file (here: its context line changed)
    is refused, not applied somewhere near, and the copy is left as it was."""
    copy = tmp_path / config.cfg.name
    copy.write_text(config.cfg.read_text())
    stale = marker_patch(config).replace(
        ' import_file "kamailio-local.cfg"', ' import_file "local.cfg"'
    )
    with pytest.raises(stock.PatchError, match=re.escape(config.cfg.name)):
        stock.apply_patch(tmp_path, stale)
    assert copy.read_text() == config.cfg.read_text()
    stock.apply_patch(tmp_path, marker_patch(config))
    assert MARKER in copy.read_text()
