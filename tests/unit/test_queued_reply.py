"""The lines route CP_FINAL (``embed/counterpoise.cfg``) queues for a proxy's 2xx, read back
by the timer process (``core.queued_reply``): written here as the route writes them, every
message value hex-encoded after "x", "-" for none."""

from __future__ import annotations

import pytest

from counterpoise.core import queued_reply
from counterpoise.core.queued_reply import QueuedReply
from counterpoise.core.settings import Settings

A = "sip:10.0.0.1:5060;transport=tcp"


def line(
    first: int | None = 4,
    final: int | None = 30,
    trying: int | None = 1,
    loads: bytes | None = None,
    load: bytes | None = None,
    proxy: str = A,
    dialog: tuple[bytes, bytes, bytes] | None = None,
) -> str:
    """A line as the route formats it (``$(...{s.encode.hexa})`` is the bytes' hex)."""

    def number(value: int | None) -> str:
        return "-" if value is None else str(value)

    def text(value: bytes | None) -> str:
        return "-" if value is None else "x" + value.hex()

    fields = ["reply", number(first), number(final), number(trying), text(loads), text(load)]
    fields.append(proxy)
    if dialog is not None:
        fields += [text(value) for value in dialog]
    return " ".join(fields)


def test_a_line_gives_back_every_raw_value():
    reply = QueuedReply.parse(line(loads=b"tx=1;workers=4|junk", load=b"tx=3;workers=4"))
    assert reply == QueuedReply(A, 4, 30, 1, "tx=1;workers=4|junk", "tx=3;workers=4", None, 0)
    assert reply.loads == ["tx=3;workers=4", "tx=1;workers=4", "junk"]


def test_absent_values_read_as_none_and_no_loads():
    reply = QueuedReply.parse(line(first=None, trying=None))
    assert reply is not None
    assert (reply.first_reply_ms, reply.trying_ms, reply.loads, reply.dialog) == (
        None,
        None,
        [],
        None,
    )


def test_a_dialog_to_record_gives_its_call_id_and_tags():
    reply = QueuedReply.parse(line(dialog=(b"from-1", b"to-1", b"call 1@host")))
    assert reply is not None and reply.dialog == ("call 1@host", "from-1", "to-1")
    empty = QueuedReply.parse(line(dialog=(b"from-1", b"", b"c")))
    assert empty is not None and empty.dialog == ("c", "from-1", "")


def test_values_that_are_not_utf8_read_as_a_worker_reads_them_and_keep_the_rest():
    """A header not UTF-8 is present but unusable (""); the provisional loads' AVP and a
    dialog id read as absent (None); each counted; every other field kept."""
    reply = QueuedReply.parse(
        line(loads=b"\xff", load=b"active=\xff", dialog=(b"f", b"t\xfe", b"call-1"))
    )
    assert reply == QueuedReply(A, 4, 30, 1, None, "", ("call-1", "f", None), 3)
    assert reply.loads == [""]


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "garbage",
        line().replace("reply", "confirm"),
        line() + " extra",
        line(proxy=""),
        line(final=None),
        line().replace(" 4 ", " -4 "),
        line().replace(" 30 ", " ３0 "),
        line(load=b"x").replace("x78", "78"),
        line(load=b"x").replace("x78", "x7"),
        line(load=b"x").replace("x78", "xzz"),
        line(dialog=(b"f", b"t", b"c")).rsplit(" ", 1)[0],
    ],
)
def test_a_line_that_is_no_reply_reads_as_none(bad: str):
    assert QueuedReply.parse(bad) is None


def test_the_bound_has_room_for_the_longest_recordable_ascii_dialog_and_its_loads():
    settings = Settings().location
    call_id, tag = settings.record_call_id_max_chars, settings.record_tag_max_chars
    longest = line(
        first=2**31 - 1,
        final=2**31 - 1,
        trying=2**31 - 1,
        loads=b"l" * (queued_reply.LOADS_MAX_BYTES // 2),
        load=b"l" * (queued_reply.LOADS_MAX_BYTES // 2),
        proxy="sip:" + "p" * (queued_reply.PROXY_URI_MAX_CHARS - 4),
        dialog=(b"f" * tag, b"t" * tag, b"c" * call_id),
    )
    assert len(longest) <= queued_reply.max_chars(call_id, tag)
    assert QueuedReply.parse(longest) is not None
