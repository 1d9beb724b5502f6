"""The final error replies a SIPp UAC got to its INVITEs, and how long after the INVITE
each came, read from SIPp's message trace (``-trace_msg``): SIPp's own statistics time only
the answered calls, and a shed call's 503 must be timed too."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterator
from pathlib import Path

from harness import testbed

TRACE_ARGS = ("-trace_msg",)
"""Every message SIPp sends and receives, each stamped, in ``uac_<pid>_messages.log``."""
SEPARATOR = "-" * 47
"""Each message of the trace follows a line of these and its time stamp; SIPp's notes
follow the line alone."""


@dataclasses.dataclass(frozen=True)
class Rejection:
    call_id: str
    status: int
    after_ms: float
    """From the INVITE's first transmission to the error reply."""
    retry_after: int | None


@dataclasses.dataclass(frozen=True)
class Message:
    at: datetime.datetime
    sent: bool
    lines: list[str]

    def header(self, name: str) -> str | None:
        prefix = name.lower() + ":"
        for line in self.lines[1:]:
            if not line:
                return None  # the body starts
            if line.lower().startswith(prefix):
                return line[len(prefix) :].strip()
        return None


def trace_file(caller: testbed.Caller) -> Path:
    """The message trace of ``caller`` (started with ``TRACE_ARGS``): SIPp names it after
    its scenario file and its pid."""
    argv = caller.proc.argv
    scenario = Path(argv[argv.index("-sf") + 1]).stem
    return caller.log.parent / f"{scenario}_{caller.proc.pid}_messages.log"


def messages(path: Path) -> Iterator[Message]:
    """The trace's messages in order."""
    head: str | None = None
    lines: list[str] = []
    with open(path, errors="replace") as trace:
        for raw in trace:
            line = raw.rstrip("\r\n")
            if line.startswith(SEPARATOR):
                if head is not None:
                    yield _message(head, lines)
                # A bare separator opens SIPp's own notes (an unexpected message's copy).
                head = line if line.removeprefix(SEPARATOR).strip() else None
                lines = []
            elif head is not None:
                lines.append(line)
    if head is not None:
        yield _message(head, lines)


def _message(head: str, lines: list[str]) -> Message:
    stamp = head.removeprefix(SEPARATOR).strip()
    at = datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f")
    sent = bool(lines) and " sent " in lines[0]
    body = lines[2:] if len(lines) > 2 and not lines[1] else lines[1:]
    return Message(at, sent, body)


def rejections(path: Path) -> list[Rejection]:
    """Each call whose last INVITE was answered with a final error (3xx-6xx), timed from that
    INVITE's first transmission: a digest challenge (401, 407) answered by a new INVITE
    gives way to what that one got."""
    invited: dict[tuple[str, str], datetime.datetime] = {}
    found: dict[str, Rejection] = {}
    for message in messages(path):
        call_id, cseq = message.header("Call-ID"), message.header("CSeq") or ""
        if not call_id or not message.lines or not cseq.endswith("INVITE"):
            continue
        first = message.lines[0]
        if message.sent and first.startswith("INVITE "):
            invited.setdefault((call_id, cseq), message.at)
            found.pop(call_id, None)
            continue
        status = _status(first)
        sent_at = invited.get((call_id, cseq))
        if message.sent or status is None or status < 300 or sent_at is None:
            continue
        if call_id not in found:
            retry_after = message.header("Retry-After")
            found[call_id] = Rejection(
                call_id,
                status,
                (message.at - sent_at).total_seconds() * 1000,
                int(retry_after.split()[0]) if retry_after else None,
            )
    return list(found.values())


def _status(first_line: str) -> int | None:
    parts = first_line.split()
    if len(parts) >= 2 and parts[0] == "SIP/2.0" and parts[1].isdigit():
        return int(parts[1])
    return None
