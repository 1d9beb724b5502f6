"""Waiting for a process's socket without taking the port from it."""

import socket

from counterpoise import processes


def test_udp_bound_sees_a_bound_socket_and_its_release() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        assert processes.udp_bound("127.0.0.1", port)
    assert not processes.udp_bound("127.0.0.1", port)


def test_udp_bound_counts_the_wildcard_address() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("0.0.0.0", 0))
        assert processes.udp_bound("127.0.0.1", sock.getsockname()[1])
