"""A Prometheus scrape endpoint without threads, for Kamailio's timer process.

Python threads do not run in Kamailio processes (app_python3 holds the interpreter only
while Kamailio calls into it), so the timer process polls a non-blocking listening socket
once per sync tick and answers every scrape waiting: a scrape waits at most one tick
(200 ms), well inside Prometheus' 10 s scrape timeout. A slow or silent client can cost
the tick at most ``CLIENT_TIMEOUT_S``, and ``MAX_CLIENTS_PER_POLL`` clients are served per
tick; the request is read up to ``MAX_REQUEST_BYTES``.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from prometheus_client.exposition import CONTENT_TYPE_LATEST

from counterpoise import clock
from counterpoise.core.settings import host_port

CLIENT_TIMEOUT_S = 0.02
"""Longest a client may take to send its request: a local Prometheus sends it in one packet
right after connecting; 20 ms bounds what a stuck client costs the sync loop."""
MAX_REQUEST_BYTES = 8192
MAX_CLIENTS_PER_POLL = 8
"""Scrapes answered per tick: more than any sane number of Prometheus servers, and a cap on
what a connection flood can cost the sync loop."""


class ListenError(ValueError):
    """The metrics address is malformed or cannot be bound."""


def parse_listen(text: str) -> tuple[str, int]:
    address = host_port(text)
    if address is None:
        raise ListenError(f"metrics address {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9464")
    return address


class ScrapeServer:
    """Answers ``GET /metrics`` with ``render()``; anything else with 404."""

    def __init__(self, listen: str) -> None:
        host, port = parse_listen(listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host, port))
        except OSError as error:
            self._socket.close()
            raise ListenError(f"metrics address {listen}: {error}") from None
        self._socket.listen(16)
        self._socket.setblocking(False)
        self.address = self._socket.getsockname()[:2]

    def poll(self, render: Callable[[], bytes]) -> int:
        """Answer the scrapes waiting now; returns how many connections were handled."""
        handled = 0
        while handled < MAX_CLIENTS_PER_POLL:
            try:
                client, _ = self._socket.accept()
            except (BlockingIOError, InterruptedError):
                break
            handled += 1
            with client:
                try:
                    self._answer(client, render)
                except OSError:
                    continue  # the client went away: nothing to answer
        return handled

    def _answer(self, client: socket.socket, render: Callable[[], bytes]) -> None:
        deadline_s = clock.monotonic_s() + CLIENT_TIMEOUT_S
        request = b""
        while b"\r\n\r\n" not in request and len(request) < MAX_REQUEST_BYTES:
            left_s = deadline_s - clock.monotonic_s()
            if left_s <= 0:
                raise TimeoutError("scrape request not sent in time")
            client.settimeout(left_s)
            chunk = client.recv(4096)
            if not chunk:
                break
            request += chunk
        method, _, rest = request.partition(b" ")
        path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
        if method == b"GET" and path in (b"/metrics", b"/"):
            status, body, kind = "200 OK", render(), CONTENT_TYPE_LATEST
        else:
            status, body, kind = "404 Not Found", b"try /metrics\n", "text/plain"
        head = (
            f"HTTP/1.0 {status}\r\nContent-Type: {kind}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        client.settimeout(1.0)  # the body goes to a reader that asked for it
        client.sendall(head.encode() + body)

    def close(self) -> None:
        self._socket.close()
