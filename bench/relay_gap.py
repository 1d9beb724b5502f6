"""How long a node takes, on the wire, from relaying an INVITE to sending its caller the
100 Trying (``python -m bench.relay_gap``): a node that dies in between leaves a caller with
no 100, whose retransmission the pair's survivor routes anew, so the call is placed twice
(docs/deploying.md). Its mean times the call rate is the share of deaths that do so.

Root: an ``AF_PACKET`` socket sees every IPv4 UDP packet of this network namespace (the
pair's bridge and links among them) while COMMAND runs. Of the packets sent from
``--address`` (the pair's floating address), each Call-ID's first INVITE and first 100 are
timed; a packet seen on two interfaces counts where it was seen first.

    sudo .venv/bin/python -m bench.relay_gap -- .venv/bin/pytest \\
        'tests/e2e/test_node_pair.py::test_the_standby_takes_over_a_dead_node_and_gives_it_back_without_losing_a_call[subsecond]'
"""

from __future__ import annotations

import argparse
import re
import socket
import statistics
import subprocess
import threading
import time

from harness.pair import FLOATING_HOST, LAN_PREFIX

ETH_P_ALL = 0x0003
_IPV4, _UDP = b"\x08\x00", 17
_CALL_ID = re.compile(rb"\r\n(?:Call-ID|i)[ \t]*:[ \t]*([^\r]+)", re.IGNORECASE)


def sip_sent_by(frame: bytes, address: str) -> tuple[bytes, bytes] | None:
    """(first line, Call-ID) of a SIP message in an Ethernet ``frame`` sent from ``address``
    over IPv4 UDP; None for anything else."""
    if len(frame) < 42 or frame[12:14] != _IPV4 or frame[23] != _UDP:
        return None
    ip = frame[14:]
    if socket.inet_ntoa(ip[12:16]) != address:
        return None
    payload = ip[(ip[0] & 15) * 4 + 8 :]
    found = _CALL_ID.search(payload)
    if found is None:
        return None
    return payload.split(b"\r\n", 1)[0], found.group(1)


def gaps_s(packets: list[tuple[float, bytes, bytes]]) -> list[float]:
    """Per Call-ID, the seconds from its first INVITE to its first 100, given (time, first
    line, Call-ID) of the packets one address sent."""
    relayed: dict[bytes, float] = {}
    trying: dict[bytes, float] = {}
    for at, line, call_id in packets:
        if line.startswith(b"INVITE "):
            relayed.setdefault(call_id, at)
        elif line.startswith(b"SIP/2.0 100 ") and call_id in relayed:
            trying.setdefault(call_id, at)
    return [trying[call_id] - relayed[call_id] for call_id in trying]


def capture(address: str, command: list[str]) -> tuple[int, list[float]]:
    """Run ``command`` while capturing; its exit status and the gaps."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.settimeout(0.2)
    packets: list[tuple[float, bytes, bytes]] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                frame = sock.recv(70_000)
            except TimeoutError:
                continue
            sent = sip_sent_by(frame, address)
            if sent is not None:
                packets.append((time.monotonic(), *sent))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        status = subprocess.run(command, check=False).returncode
    finally:
        done.set()
        reader.join()
        sock.close()
    return status, gaps_s(packets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", default=f"{LAN_PREFIX}.{FLOATING_HOST}")
    parser.add_argument("command", nargs="+")
    args = parser.parse_args()
    status, gaps = capture(args.address, args.command)
    if not gaps:
        raise SystemExit(f"no INVITE and 100 Trying sent from {args.address} (exit {status})")
    ms = sorted(gap * 1000 for gap in gaps)
    print(
        f"{len(ms)} calls from {args.address}, relay to 100 Trying: mean {statistics.mean(ms):.3f}"
        f" ms, median {statistics.median(ms):.3f}, 99th percentile {ms[len(ms) * 99 // 100]:.3f},"
        f" max {ms[-1]:.3f} (command exit {status})"
    )


if __name__ == "__main__":
    main()
