"""SIP over raw UDP sockets for the attack tests: hand-made requests and replies, and peers
that send them, listen for what arrives, and answer as a scripted proxy or callee would."""

from __future__ import annotations

import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence

Address = tuple[str, int]


class Peer:
    """One UDP socket on ``ip`` (any 127.x.y.z is a distinct source on loopback)."""

    def __init__(self, ip: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((ip, 0))
        self.address: Address = self.sock.getsockname()
        self.received: list[bytes] = []

    @property
    def uri(self) -> str:
        return f"sip:{self.address[0]}:{self.address[1]}"

    def send(self, data: bytes, to: Address) -> None:
        self.sock.sendto(data, to)

    def recv(self, timeout_s: float) -> bytes | None:
        self.sock.settimeout(timeout_s)
        try:
            data, _ = self.sock.recvfrom(70_000)
        except TimeoutError:
            return None
        self.received.append(data)
        return data

    def final_reply(self, timeout_s: float = 5.0) -> bytes | None:
        """The first final reply within ``timeout_s`` (provisional ones are kept too)."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            data = self.recv(left)
            if data is not None and (status_of(data) or 0) >= 200:
                return data
        return None

    def close(self) -> None:
        self.sock.close()


def status_of(message: bytes) -> int | None:
    match = re.match(rb"SIP/2\.0 (\d{3}) ", message)
    return int(match.group(1)) if match else None


def header(message: bytes, name: str) -> list[bytes]:
    pattern = rb"^" + re.escape(name.encode()) + rb":[ \t]*(.*?)\r$"
    return re.findall(pattern, message, re.MULTILINE | re.IGNORECASE)


def request(
    method: str,
    ruri: str,
    sender: Address,
    *,
    to_tag: str | None = None,
    from_tag: str | None = None,
    routes: Sequence[str] = (),
    extra: Sequence[str] = (),
    call_id: str | None = None,
    cseq: int = 1,
    user: str = "alice",
) -> bytes:
    host, port = sender
    lines = [
        f"{method} {ruri} SIP/2.0",
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{uuid.uuid4().hex};rport",
        "Max-Forwards: 70",
        f"From: <sip:{user}@example.com>;tag={from_tag or uuid.uuid4().hex[:8]}",
        f"To: <{ruri}>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call_id or uuid.uuid4().hex}",
        f"CSeq: {cseq} {method}",
        f"Contact: <sip:{user}@{host}:{port}>",
        *(f"Route: <{route};lr>" for route in routes),
        *extra,
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def reply(to: bytes, status: int, reason: str, extra: Sequence[bytes] = (), tag: str = "") -> bytes:
    """A reply to request ``to``: its Vias, From, Call-ID, CSeq and Record-Routes, its To with
    ``tag`` added, plus ``extra`` header lines (bytes: they may hold anything)."""
    copied = []
    for line in to.split(b"\r\n")[1:]:
        name = line.split(b":", 1)[0].strip().lower()
        if name in (b"via", b"from", b"call-id", b"cseq", b"record-route"):
            copied.append(line)
        elif name == b"to":
            copied.append(line + (f";tag={tag}".encode() if tag and b"tag=" not in line else b""))
    first = f"SIP/2.0 {status} {reason}".encode()
    return b"\r\n".join([first, *copied, *extra, b"Content-Length: 0"]) + b"\r\n\r\n"


def method_of(message: bytes) -> str:
    return message.split(b" ", 1)[0].decode(errors="replace")


class Responder:
    """A peer that answers every request it gets with ``answer(request)`` (a list of messages
    to send back to the request's source, and pauses in seconds between them), in a thread,
    until closed."""

    def __init__(
        self, answer: Callable[[bytes], list[bytes | float]], ip: str = "127.0.0.1"
    ) -> None:
        self.peer = Peer(ip)
        self.answer = answer
        self.requests: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def uri(self) -> str:
        return self.peer.uri

    def _run(self) -> None:
        self.peer.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                data, source = self.peer.sock.recvfrom(70_000)
            except (TimeoutError, OSError):
                continue
            if status_of(data) is not None:
                continue
            self.requests.append(data)
            for message in self.answer(data):
                if isinstance(message, float):  # a pause between two replies
                    time.sleep(message)
                else:
                    self.peer.sock.sendto(message, source)

    def of_method(self, method: str) -> list[bytes]:
        return [r for r in self.requests if method_of(r) == method]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.peer.close()
