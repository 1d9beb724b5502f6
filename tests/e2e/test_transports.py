"""Calls over each transport through the balancer: TCP and IPv6 at the edge, proxies reached
over TCP and TLS. Every call's ACK and BYE follow the Record-Route set (double Record-Route
where the balancer changes transport or address family), which the proxy's counts show."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from counterpoise import processes
from tests.e2e.conftest import Bed, calls_complete

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate and its key, made with openssl for this test run."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def test_tcp_caller_relayed_to_a_udp_proxy(bed: Bed) -> None:
    bed.start_balancer(listen="udp:127.0.0.1:{port},tcp:127.0.0.1:{port}")
    calls_complete(bed, bed.start_downstream("udp"), extra=("-t", "t1"))


def test_proxy_reached_over_tcp(bed: Bed) -> None:
    bed.start_balancer(listen="udp:127.0.0.1:{port},tcp:127.0.0.1:{port}")
    calls_complete(bed, bed.start_downstream("tcp", transport="tcp"))


def test_proxy_reached_over_tls(bed: Bed, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    port = bed.start_balancer(
        listen="udp:127.0.0.1:{port},tls:127.0.0.1:{port}",
        tls_certificate=str(cert),
        tls_private_key=str(key),
    )
    # The balancer's own TLS socket answers with the test's certificate.
    assert processes.sip_options("127.0.0.1", port, 2.0, proto="tls") == 200
    calls_complete(bed, bed.start_downstream("tls", transport="tls", tls=certificate))


def test_ipv6_caller_relayed_to_an_ipv4_proxy(bed: Bed) -> None:
    bed.start_balancer(listen="udp:127.0.0.1:{port},udp:[::1]:{port}")
    calls_complete(bed, bed.start_downstream("v4"), host="[::1]", local_ip="::1")


def test_advertised_address_in_the_route_set(bed: Bed) -> None:
    # 127.0.0.2 is not a balancer socket: the Record-Route the caller gets must carry it,
    # and the ACK and BYE sent with it must still be recognised as the balancer's own.
    bed.start_balancer(advertise="127.0.0.2")
    calls_complete(bed, bed.start_downstream("a"), calls=3, extra=("-trace_msg",))
    messages = "".join(p.read_text(errors="replace") for p in bed.run_dir.glob("*messages.log"))
    assert f"<sip:127.0.0.2:{bed.balancer_port};lr" in messages  # in the 200s Record-Route
