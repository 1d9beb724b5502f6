"""A proxy's final reply that a native config's reply route counted out of flight and queued
for the timer process (route ``CP_FINAL`` of ``embed/counterpoise.cfg``): the raw values the
outcome is judged from, as the route wrote them, read back here.

The route queues only what it can copy: numbers, the proxy's URI (a pool URI, no spaces) and,
hex-encoded, every value a message may hold anything in (the ``X-CP-Load`` values, the
dialog's tags and Call-ID): no byte of a hostile header can split a field or make the line
unreadable as UTF-8, and each value is judged as the SIP worker's Python would have read it.

``"reply <first> <final> <trying> <loads> <load> <proxy uri>[ <from tag> <to tag> <Call-ID>]"``:
``<first>`` the ms to the proxy's first reply other than 100 Trying (``cpf``), ``<final>``
the ms to this final reply, ``<trying>`` the ms to its 100 Trying (``cpq``), each ``ABSENT``
when the attempt has none; ``<loads>`` the ``X-CP-Load`` values of its provisional replies
(``cpl``), ``<load>`` the final reply's own; the dialog's ids, when the location server records
the dialog this 2xx starts; each hex value after ``HEX_MARK`` (so an empty value is a field
too), or ``ABSENT``.
"""

from __future__ import annotations

import dataclasses

WORD = "reply"
"""The first word of the line, beside the dialog events' ``confirm`` and ``end`` in the same
queue (``kamailio.htables.DIALOG_EVENTS``)."""
START = f"{WORD} "
"""How a reply's line begins: what tells it from a dialog event's without splitting it."""
ABSENT = "-"
HEX_MARK = "x"
LOAD_SEPARATOR = "|"
"""Between the provisional replies' load values (``kamailio.avps.LOAD_SEPARATOR``)."""

_FRAME_CHARS = 64
"""The word, the numbers and the spaces of a line."""
PROXY_URI_MAX_CHARS = 512
"""Room for the proxy's URI in a line: a host name and its parameters."""
LOADS_MAX_BYTES = 512
"""Room for an attempt's load values in a line, in bytes: a proxy states a few counts in
each reply, some 30 bytes."""


def max_chars(call_id_max_chars: int, tag_max_chars: int) -> int:
    """The longest line the route queues; the reply of a longer one is left to Python, which
    judges it as ever (a queue of lines this long stays within a few MB). The dialog's ids
    have room for the longest recordable ones in ASCII, hex-encoded as the loads are (two
    characters a byte)."""
    hex_bytes = LOADS_MAX_BYTES + call_id_max_chars + 2 * tag_max_chars
    return _FRAME_CHARS + PROXY_URI_MAX_CHARS + 2 * hex_bytes


@dataclasses.dataclass(frozen=True)
class QueuedReply:
    proxy: str
    first_reply_ms: int | None
    final_ms: int
    trying_ms: int | None
    provisional_loads: str | None
    """The provisional replies' load values, joined; None when absent or not UTF-8 (as the
    worker reads the AVP: ``read.value``)."""
    load: str | None
    """The final reply's load value; None without one, "" when it is not UTF-8 (as the
    worker reads a header: ``read.header``)."""
    dialog: tuple[str | None, str | None, str | None] | None
    """Call-ID, From tag, To tag of the dialog to record (each None when not UTF-8, as
    ``read.dialog_ids``), or None when the line asks for no record."""
    not_utf8: int = 0
    """How many of its values were not UTF-8 (a worker counts each read of one)."""

    @property
    def loads(self) -> list[str]:
        """The load values to count with the outcome, the final reply's first."""
        loads = [] if self.load is None else [self.load]
        if self.provisional_loads is not None:
            loads += self.provisional_loads.split(LOAD_SEPARATOR)
        return loads

    @classmethod
    def parse(cls, line: str) -> QueuedReply | None:
        """The reply of a queued line; None when the line is not one."""
        fields = line.split(" ")
        if len(fields) not in (7, 10) or fields[0] != WORD or not fields[6]:
            return None
        try:
            first, final, trying = map(_number, fields[1:4])
            values = [_hex(field) for field in fields[4:6] + fields[7:]]
        except ValueError:
            return None
        if final is None:
            return None
        texts = [None if value is None else utf8_or_none(value) for value in values]
        unreadable = sum(
            1
            for value, text in zip(values, texts, strict=True)
            if value is not None and text is None
        )
        load = texts[1]
        if values[1] is not None and load is None:
            load = ""  # present but not UTF-8: a rejected header
        dialog = (texts[4], texts[2], texts[3]) if len(values) == 5 else None
        return cls(fields[6], first, final, trying, texts[0], load, dialog, unreadable)


def _number(field: str) -> int | None:
    """A number field: None when absent; ``ValueError`` when it is no number."""
    if field == ABSENT:
        return None
    if not field.isascii() or not field.isdigit():
        raise ValueError(field)
    return int(field)


def _hex(field: str) -> bytes | None:
    """A hex field's bytes: None when absent; ``ValueError`` when it is not hex."""
    if field == ABSENT:
        return None
    return hex_field(field)


def hex_field(field: str) -> bytes:
    """The bytes of a field a native route hex-encoded after ``HEX_MARK``; ``ValueError``
    when it is not one."""
    if not field.startswith(HEX_MARK):
        raise ValueError(field)
    return bytes.fromhex(field[1:])


def utf8_or_none(value: bytes) -> str | None:
    """The text of a hex field's bytes; None when they are not UTF-8 (as a SIP worker's
    Python reads such a value: ``kamailio.read``)."""
    try:
        return value.decode()
    except UnicodeDecodeError:
        return None
