"""Counting what a balancer sends to each proxy, on the wire.

A proxy's own counters say what it has *read*, and a busy proxy reads no faster than its
capacity: an INVITE waiting in its socket queue is not counted yet, so a balancer that keeps
sending to an overloaded proxy would look as if it had moved the load away. The tap reads
every UDP datagram on the loopback interface (a raw ``AF_PACKET`` socket: needs root or
CAP_NET_RAW) and counts, per proxy port, the distinct Call-IDs of the INVITEs sent to it:
retransmissions count once, a failover counts for each proxy tried.
"""

from __future__ import annotations

import re
import socket
import threading
import time

from bench.pool import InviteSample

ETH_P_ALL = 0x0003
PACKET_HOST = 0
"""On ``lo`` every datagram is seen twice, outgoing and incoming; keep the incoming copy."""
ETHERNET_HEADER = 14
IPPROTO_UDP = 17
READ_TIMEOUT_S = 0.2
"""How long one read waits, so the thread notices it should stop."""

CALL_ID = re.compile(rb"\r\n(?:Call-ID|i)\s*:\s*(\S+)", re.IGNORECASE)


class TapUnavailable(RuntimeError):
    pass


class InviteTap(threading.Thread):
    def __init__(self, ports: dict[int, str]) -> None:
        """``ports``: proxy port -> proxy name."""
        super().__init__(daemon=True)
        self.ports = ports
        try:
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(ETH_P_ALL))
        except (PermissionError, AttributeError, OSError) as error:
            raise TapUnavailable(f"cannot read the loopback interface: {error}") from None
        self.sock.bind(("lo", 0))
        self.sock.settimeout(READ_TIMEOUT_S)
        self.counts = dict.fromkeys(ports.values(), 0)
        self.seen: set[tuple[int, bytes]] = set()
        self.lock = threading.Lock()
        self.done = threading.Event()

    def run(self) -> None:
        try:
            while not self.done.is_set():
                try:
                    frame, address = self.sock.recvfrom(65535)
                except TimeoutError:
                    continue
                if address[2] == PACKET_HOST:
                    self._count(frame)
        finally:
            self.sock.close()

    def _count(self, frame: bytes) -> None:
        ip = frame[ETHERNET_HEADER:]
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != IPPROTO_UDP:
            return
        header = (ip[0] & 0x0F) * 4
        port = int.from_bytes(ip[header + 2 : header + 4], "big")
        name = self.ports.get(port)
        payload = ip[header + 8 :]
        if name is None or not payload.startswith(b"INVITE "):
            return
        match = CALL_ID.search(payload)
        if not match:
            return
        key = (port, match.group(1))
        with self.lock:
            if key not in self.seen:
                self.seen.add(key)
                self.counts[name] += 1

    def sample(self, t0: float) -> InviteSample:
        with self.lock:
            counts: dict[str, int | None] = dict(self.counts)
        return InviteSample(time.monotonic() - t0, counts)

    def stop(self) -> None:
        self.done.set()
        self.join()
