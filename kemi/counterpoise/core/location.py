"""The location server's decisions: pure Python, no Kamailio, no Redis.

What a record is and what the balancer does with it:

* an **address-of-record** (AOR) is ``user@host``: the user part as sent (RFC 3261: user
  parts are case-sensitive), the host in lower case, without scheme, port or parameters;
* a **registration record** says which proxy a REGISTER of that AOR last got a 2xx from;
  it lives as long as the longest binding that 2xx granted;
* an **AOR pin** and a **domain pin** are the operator's records, without expiry;
* a **dialog record** maps a Call-ID (and its two tags) to the proxy that answered the INVITE.
  It is written once the dialog is confirmed (the ACK of its 2xx), deleted only by a BYE with
  the dialog's own tags, and at most ``dialog_records_per_source`` are held for one caller
  address (``source_of``).

Precedence of the records of one request: AOR pin, then registration, then domain pin; the
first one found names the *holder*. The holder takes the request when it is usable (has a
weight in this node's routing table: in the pool, active, not down); otherwise REGISTER always
goes by weight (so the user re-registers elsewhere and the record moves), and any other
request follows ``location_fallback``: by weight, or rejected with 480.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping

from counterpoise.core import queued_reply
from counterpoise.core.pool import MAX_EPOCH_MS, check_proxy_uri
from counterpoise.core.settings import Fallback
from counterpoise.core.untrusted import BadRecord, untrusted

DEFAULT_EXPIRES_S = 3600
"""Expiry of a binding when the 2xx gives none (neither a Contact ``expires`` parameter nor
an Expires header): RFC 3261 section 10.2.1.1's recommended default. A registrar that follows
RFC 3261 always gives one (10.3 step 8), so this only covers a sloppy one."""

REJECT_CODE = 480
REJECT_REASON = "Holder Proxy Unavailable"
"""The answer to a request for a recorded user whose proxy is down, drained or gone, under
``location_fallback = "reject"``: 480 Temporarily Unavailable (RFC 3261 21.4.18: the callee
is known but cannot be reached now), with a reason that says why."""

# Sources of a holder, in precedence order.
PIN, REGISTRATION, DOMAIN = "pin", "registration", "domain"


class InvalidName(ValueError):
    pass


# --- names ------------------------------------------------------------------------------------


def aor(user: str, host: str) -> str:
    """The address-of-record of a user at a host, as records are keyed."""
    return f"{user}@{host.lower()}"


_SCHEME = re.compile(r"^sips?:", re.I)
_URI = re.compile(r"^(?:(?P<user>[^@;?>]+)@)?(?P<host>\[[^\]]+\]|[^:;?>]+)")


def parse_name(text: str) -> tuple[str, str]:
    """What the operator typed: ``("aor", "user@host")`` for an AOR or a SIP URI with a user,
    ``("domain", "host")`` for a bare domain. Raises ``InvalidName``."""
    stripped = _SCHEME.sub("", text.strip().strip("<>"))
    match = _URI.match(stripped)
    if not stripped or match is None or not match.group("host"):
        raise InvalidName(f"{text!r} is neither user@domain, a SIP URI nor a domain")
    host = match.group("host")
    if match.group("user"):
        return "aor", aor(match.group("user"), host)
    if "@" in stripped or " " in stripped:
        raise InvalidName(f"{text!r} is neither user@domain, a SIP URI nor a domain")
    return "domain", host.lower()


# --- registrations ------------------------------------------------------------------------------


def split_header_values(values: Iterable[str]) -> list[str]:
    """Contact header bodies split at the commas that separate contacts (not those inside
    quotes or angle brackets)."""
    contacts = []
    for value in values:
        depth, quoted, start = 0, False, 0
        for index, char in enumerate(value):
            if char == '"' and (index == 0 or value[index - 1] != "\\"):
                quoted = not quoted
            elif quoted:
                continue
            elif char == "<":
                depth += 1
            elif char == ">":
                depth = max(depth - 1, 0)
            elif char == "," and depth == 0:
                contacts.append(value[start:index])
                start = index + 1
        contacts.append(value[start:])
    return [c.strip() for c in contacts if c.strip()]


_EXPIRES_PARAM = re.compile(r";\s*expires\s*=\s*\"?(\d+)", re.I)


def contact_expires(contact: str) -> int | None:
    """The ``expires`` parameter of one contact (after its URI), or None."""
    if "<" in contact:
        params = contact.rpartition(">")[2]
    else:  # no angle brackets: everything after the URI's first ";" is a header parameter
        params = contact[contact.find(";") :] if ";" in contact else ""
    match = _EXPIRES_PARAM.search(params)
    return int(match.group(1)) if match else None


def granted_expiry_s(contact_values: Iterable[str], expires_header: str | None) -> int:
    """Seconds the registration lives according to a REGISTER's 2xx: the longest binding it
    lists (each contact's ``expires``, else the Expires header, else the RFC default). 0 when
    it lists none: every binding of the AOR at that proxy is gone (an unregistration)."""
    contacts = [c for c in split_header_values(contact_values) if c != "*"]
    if not contacts:
        return 0
    header = _int_or_none(expires_header)
    default = header if header is not None else DEFAULT_EXPIRES_S
    expiries = [contact_expires(c) for c in contacts]
    return max(default if e is None else e for e in expiries)


def _int_or_none(text: str | None) -> int | None:
    if text is None:
        return None
    text = str(text).strip()
    return int(text) if text.isdigit() else None


# --- records ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Record:
    """One record's value (JSON in Redis)."""

    proxy: str
    since_ms: int = 0
    """Epoch ms it was written."""
    expires_ms: int = 0
    """Epoch ms it expires; 0 = never (pins)."""
    from_tag: str = ""
    to_tag: str = ""
    """Dialog records only."""
    source: str = ""
    """Dialog records only: the caller's address (``source_of``) whose ACK confirmed the
    dialog; empty while it is unconfirmed (this node's copy only)."""

    def to_json(self) -> str:
        """The text ``json.dumps(..., sort_keys=True)`` makes of its fields (a dialog's tags
        and source, and an expiry, only when set), formatted here: the timer process writes
        one for every call, and ``json.dumps`` with a keyword builds an encoder each time."""
        tags = bool(self.from_tag or self.to_tag)
        fields = [f'"expires_ms": {self.expires_ms}'] if self.expires_ms else []
        if tags:
            fields.append(f'"from_tag": {_json_string(self.from_tag)}')
        fields += [f'"proxy": {_json_string(self.proxy)}', f'"since_ms": {self.since_ms}']
        if self.source:
            fields.append(f'"source": {_json_string(self.source)}')
        if tags:
            fields.append(f'"to_tag": {_json_string(self.to_tag)}')
        return "{" + ", ".join(fields) + "}"

    @classmethod
    def from_json(cls, text: str | bytes | None) -> Record | None:
        """The record, or None for no record; ``BadRecord`` saying why for one that is not
        usable (a hand edit or a foreign writer: see ``parse_record``)."""
        if text is None:
            return None
        return untrusted(lambda: _parse_record(text))

    def to_local(self) -> str:
        """This node's own copy of a dialog record (``htables.DIALOGS``): a JSON list, which
        ``from_local`` reads back without the checks of a record from Redis (only this node's
        workers write that table)."""
        return local_dialog_record(
            self.proxy, self.since_ms, self.expires_ms, self.from_tag, self.to_tag, self.source
        )

    @classmethod
    def from_local(cls, text: str, ttl_ms: int = 0) -> Record | None:
        """The record ``to_local`` wrote, or the one a native reply route wrote
        (``NATIVE_LOCAL``: ``ttl_ms``, its lifetime, makes its expiry); None for anything
        else."""
        if text.startswith(NATIVE_LOCAL):
            return _native_local(text, ttl_ms)
        try:
            proxy, since_ms, expires_ms, from_tag, to_tag, source = json.loads(text)
        except (ValueError, TypeError):
            return None
        return cls(proxy, since_ms, expires_ms, from_tag, to_tag, source)

    def confirmed_by(self, source: str) -> Record:
        """This dialog record with ``source``, the caller's address its ACK came from: made
        directly, as ``dataclasses.replace`` looks the fields up at each call, and the timer
        process confirms every call."""
        return Record(
            self.proxy, self.since_ms, self.expires_ms, self.from_tag, self.to_tag, source
        )

    def matches_tags(self, from_tag: str, to_tag: str) -> bool:
        """Whether an in-dialog request's tags are this dialog's, in either direction (the
        callee's requests carry the tags swapped)."""
        if not (self.from_tag or self.to_tag):
            return True
        return {from_tag, to_tag} == {self.from_tag, self.to_tag}


def local_dialog_record(
    proxy: str, since_ms: int, expires_ms: int, from_tag: str, to_tag: str, source: str = ""
) -> str:
    """``Record.to_local`` of these fields, written by a SIP worker for each 2xx of an INVITE:
    the text ``json.dumps`` makes of the list, each string escaped by the encoder's own
    function, without a ``Record`` or an encoder made per call."""
    proxy, from_tag, to_tag, source = map(_json_string, (proxy, from_tag, to_tag, source))
    return f"[{proxy}, {since_ms}, {expires_ms}, {from_tag}, {to_tag}, {source}]"


NATIVE_LOCAL = "n "
"""This node's copy of a dialog record as route ``CP_FINAL`` (``embed/counterpoise.cfg``)
writes it for a proxy's 2xx, at once, before the timer process counts the record: ``"n
<proxy uri> <wall s> <its µs> <from tag> <to tag>"``, the tags hex-encoded after
``queued_reply.HEX_MARK`` (any byte). Read as the same record as ``to_local``'s."""


def _native_local(text: str, ttl_ms: int) -> Record | None:
    fields = text.split(" ")
    if len(fields) != 6 or not fields[1]:
        return None
    _, proxy, seconds, micros, from_tag, to_tag = fields
    try:
        since_ms = int(seconds) * 1000 + int(micros) // 1000
        tags = [queued_reply.hex_field(tag).decode() for tag in (from_tag, to_tag)]
    except ValueError:  # UnicodeDecodeError is one
        return None
    return Record(proxy, since_ms, since_ms + ttl_ms, *tags)


_json_string = json.encoder.encode_basestring_ascii
"""A str as ``json.dumps`` writes it (quoted, escaped, ASCII)."""


MAX_RECORD_BYTES = 2048
"""Largest location record accepted; a dialog record with two long tags is about 250 bytes."""

MAX_TAG_CHARS = 256
"""Longest From/To tag accepted in a dialog record (RFC 3261 sets no limit; real tags are
8 to 64 characters)."""


MAX_SOURCE_CHARS = 64
"""Longest source in a dialog record: an IPv6 /64 is at most 43 characters."""


SOURCES_MEMO = 4096
"""Caller addresses a process remembers the source of: callers call again, and the ACK of
each call asks; a flood of new ones only refills it."""


@functools.lru_cache(maxsize=SOURCES_MEMO)
def source_of(address: str) -> str:
    """The source a caller's dialog records count against: its IPv4 address, or the /64 an
    IPv6 address is in (one host gets a whole /64, and would otherwise be 2**64 sources)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:MAX_SOURCE_CHARS]
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _parse_record(text: str | bytes) -> Record:
    if len(text) > MAX_RECORD_BYTES:
        raise BadRecord(f"{len(text)} bytes, more than {MAX_RECORD_BYTES}")
    data = json.loads(text)
    if not isinstance(data, dict):
        raise BadRecord(f"not a JSON object: {type(data).__name__}")
    proxy = data.get("proxy")
    if not isinstance(proxy, str):
        raise BadRecord("proxy: not a string")
    return Record(
        proxy=check_proxy_uri(proxy),
        since_ms=_epoch_ms(data, "since_ms"),
        expires_ms=_epoch_ms(data, "expires_ms"),
        from_tag=_text(data, "from_tag", MAX_TAG_CHARS),
        to_tag=_text(data, "to_tag", MAX_TAG_CHARS),
        source=_text(data, "source", MAX_SOURCE_CHARS),
    )


def _epoch_ms(data: dict[str, object], name: str) -> int:
    value = data.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_EPOCH_MS:
        raise BadRecord(f"{name}: {value!r} is not an integer in 0..{MAX_EPOCH_MS}")
    return value


def _text(data: dict[str, object], name: str, longest: int) -> str:
    value = data.get(name, "")
    if not isinstance(value, str) or len(value) > longest:
        raise BadRecord(f"{name}: not a string of at most {longest} characters")
    return value


@dataclasses.dataclass(frozen=True)
class Holder:
    proxy: str
    source: str  # PIN, REGISTRATION or DOMAIN


@dataclasses.dataclass(frozen=True)
class CachedHolder:
    """A lookup's answer kept in the node's shared memory until ``until_ms`` (monotonic ms,
    one clock for every process of the machine): ``holder`` None = no record."""

    holder: Holder | None
    until_ms: int

    def encode(self) -> str:
        if self.holder is None:
            return str(self.until_ms)
        return f"{self.until_ms} {self.holder.source} {self.holder.proxy}"

    @classmethod
    def decode(cls, text: str, now_ms: int) -> CachedHolder | None:
        """The entry while it is fresh; None when it is stale or garbled (look up again)."""
        parts = text.split(" ", 2)
        if not parts[0].isdigit():
            return None
        until_ms = int(parts[0])
        if until_ms <= now_ms:
            return None
        if len(parts) == 1:
            return cls(None, until_ms)
        if len(parts) == 3 and parts[1] and parts[2]:
            return cls(Holder(parts[2], parts[1]), until_ms)
        return None


def holder(pin: Record | None, registration: Record | None, domain: Record | None) -> Holder | None:
    """The proxy the records send a request to, or None: AOR pin, registration, domain pin."""
    for record, source in ((pin, PIN), (registration, REGISTRATION), (domain, DOMAIN)):
        if record is not None:
            return Holder(record.proxy, source)
    return None


@dataclasses.dataclass(frozen=True)
class Decision:
    """What to do with an initial request: ``proxy`` set = send it there; ``reject`` = answer
    480; neither = choose by weight. ``outcome`` names it for the counters."""

    proxy: str | None = None
    reject: bool = False
    outcome: str = "none"
    holder: Holder | None = None


BY_WEIGHT = Decision()
"""No record steers the request: it is chosen by weight (most initial requests: one shared,
frozen answer, not one made per request)."""


def decide(
    found: Holder | None,
    usable: bool,
    is_register: bool,
    fallback: Fallback,
    set_aside: bool = False,
) -> Decision:
    """The routing decision for an initial request whose records gave ``found``; ``usable``
    says whether that proxy has a weight in this node's routing table right now, ``set_aside``
    whether it weighs 0 only for a silence of ``silent_after_ms`` (still ``up``).

    A set-aside holder keeps its users' requests under ``Fallback.REJECT``: that fallback says
    no other proxy can serve them, and a silence that short is a stall as often as a death, so
    the request waits on the holder rather than failing at once with 480. A dead holder goes
    ``down`` within ``fr_timer_ms`` of failures, and the fallback applies from then on. Under
    ``Fallback.WEIGHT`` another proxy may serve the user, so the request goes by weight, and
    a REGISTER always does (the user moves to a proxy that answers)."""
    if found is None:
        return BY_WEIGHT
    if usable or (set_aside and not is_register and fallback == Fallback.REJECT):
        return Decision(proxy=found.proxy, outcome=found.source, holder=found)
    if is_register or fallback == Fallback.WEIGHT:
        return Decision(outcome="fallback", holder=found)
    return Decision(reject=True, outcome="rejected", holder=found)


def encode_counts(counts: Mapping[str, int]) -> str:
    """One process's counters as one shared-memory value (``kamailio.counters``):
    ``"name=count name=count ..."``; names hold neither spaces nor ``=``."""
    return " ".join([count_part(name, count) for name, count in counts.items()])


count_part: Callable[[str, int], str] = "{}={}".format
"""One counter of ``encode_counts``' value, ``name=count`` (a process that keeps the parts of
its value formats only the counters an event changed; a str method, called per event)."""


def sum_counters(dump: Mapping[str, object]) -> dict[str, int]:
    """Totals over every process of a counters htable (``cploc``, ``cpedge``): ``"<pid>"`` ->
    ``encode_counts``. A part that is not ``name=integer`` is skipped."""
    totals: dict[str, int] = {}
    for value in dump.values():
        for part in str(value).split():
            name, _, count = part.partition("=")
            try:
                amount = int(count)
            except ValueError:
                continue
            if name:
                totals[name] = totals.get(name, 0) + amount
    return totals


# --- dialog records, written behind ------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PendingWrite:
    """A dialog record write a SIP worker queued for the timer process: set ``record`` (JSON)
    under Call-ID ``name`` for ``ttl_ms``, counted against ``source`` (the record's), or, when
    ``record`` is None, delete it if its tags are ``tags`` (a BYE's From and To tags, in
    either order)."""

    name: str
    record: str | None = None
    ttl_ms: int = 0
    tags: tuple[str, str] = ("", "")
    source: str = ""
    """A set's record's ``source``, carried beside it: the timer never parses the record."""

    @classmethod
    def setting(cls, name: str, record: Record, ttl_ms: int) -> PendingWrite:
        """The write that sets ``record`` under Call-ID ``name`` for ``ttl_ms``."""
        return cls(name, record.to_json(), ttl_ms, source=record.source)

    def encode(self) -> str:
        return json.dumps([self.name, self.record, self.ttl_ms, *self.tags, self.source])

    @classmethod
    def decode(cls, text: str) -> PendingWrite:
        try:
            name, record, ttl_ms, from_tag, to_tag, source = json.loads(text)
        except (ValueError, TypeError) as error:
            raise ValueError(f"not a pending write: {text[:80]!r}") from error
        fields = (name, from_tag, to_tag, source)
        if not all(isinstance(f, str) for f in fields) or not (
            record is None or isinstance(record, str)
        ):
            raise ValueError(f"not a pending write: {text[:80]!r}")
        return cls(name, record, int(ttl_ms), (from_tag, to_tag), source)

    def deletes(self, record: Record | None) -> bool:
        """Whether this delete may remove ``record``: only its own dialog's BYE may."""
        return record is not None and record.matches_tags(*self.tags)


DIALOG_EVENTS_MAX = 4096
"""Most sealed ACKs and BYEs a native config's in-dialog route queues for the timer process
(``kamailio.htables.DIALOG_EVENTS``) past the last one it read: a tick's worth at 1000 calls/s
is about 400; past it a flood's events are dropped and counted, its memory stays bounded."""

_EVENT_FRAME_CHARS = 64
"""An event line's word, spaces, hex marks and source address (an IPv6 text is at most 45)."""


def dialog_event_max_chars(call_id_max_chars: int, tag_max_chars: int) -> int:
    """The longest event line that can name a recordable dialog (its ids hex-encoded, two
    characters a byte): a longer one is not queued."""
    return 2 * (call_id_max_chars + 2 * tag_max_chars) + _EVENT_FRAME_CHARS


@dataclasses.dataclass(frozen=True)
class DialogEvent:
    """A sealed ACK (``source``: the address it came from) or a relayed BYE (``source`` "")
    of a native config's in-dialog route, as it queued it: ``"confirm <from tag> <to tag>
    <source> <Call-ID>"``, ``"end <from tag> <to tag> <Call-ID>"``, each id hex-encoded after
    ``queued_reply.HEX_MARK``: a caller's Call-ID may hold spaces and bytes that are not
    UTF-8, and no byte of it may split a field or make the line unreadable."""

    call_id: str | None
    """None, as each id: not UTF-8 (a worker reads such an id as none: no record has it)."""
    from_tag: str | None
    to_tag: str | None
    source: str = ""
    not_utf8: int = 0
    """How many of its ids were not UTF-8 (a worker counts each read of one)."""

    @property
    def confirms(self) -> bool:
        return bool(self.source)

    @classmethod
    def parse(cls, text: str) -> DialogEvent | None:
        """The event of a queued line; None when it is no event."""
        word, *fields = text.split(" ")
        if (word, len(fields)) not in (("confirm", 4), ("end", 3)):
            return None
        source = fields.pop(2) if word == "confirm" else ""
        try:
            values = [queued_reply.hex_field(field) for field in fields]
        except ValueError:
            return None
        if not all(values) or (word == "confirm" and not source):
            return None
        from_tag, to_tag, call_id = map(queued_reply.utf8_or_none, values)
        unreadable = (from_tag, to_tag, call_id).count(None)
        return cls(call_id, from_tag, to_tag, source, unreadable)


QUEUE_BATCH_MS = 50
"""A worker's dialog writes of one such period share one entry of the queue
(``kamailio.htables.DIALOG_WRITES``), rewritten whole with each: the timer process reads and
removes one entry per worker and period, not one per write. It takes a period's entry once
the next period is over too, so a record reaches Redis within a tick and two periods of its
ACK. (A worker stalled a whole period between reading the clock and writing its entry would
have that entry's writes sent twice, the second time after any later write of the same
Call-ID.)"""

QUEUE_BATCH_WRITES = 20
"""Most writes in one queue entry: past it the worker starts another entry of the same
period, so a write costs a rewrite of at most this many (about 6 KB), whatever the rate."""


def batch_key(period: int, pid: int, part: int = 0) -> str:
    """The queue key of the ``part``-th batch of writes worker ``pid`` queued in ``period``
    (monotonic ms divided by the batch period): one writer per key, and keys sort by
    period."""
    return f"{period:015d} {pid} {part}"


def batch_line(order_ns: int, write: PendingWrite) -> str:
    """One write in a batch, after its place in the queue's order (monotonic ns); batches
    join lines with newlines, which no encoded write holds (JSON escapes them)."""
    return f"{order_text(order_ns)} {write.encode()}"


def order_text(order_ns: int) -> str:
    """A write's monotonic ns as its batch line starts with it: texts that sort as the
    numbers do."""
    return f"{order_ns:020d}"


BATCH_LINE_FRAME_CHARS = 64
"""What ``batch_line`` adds around a write's texts and TTL: its order, the JSON list's
brackets, quotes, separators and a ``null`` (under 40)."""

JSON_CHARS_PER_CHAR = 12
"""The most ``json.dumps`` writes for one character: an astral one is two ``\\uXXXX``."""


def batch_line_most_chars(write: PendingWrite) -> int:
    """At most how long ``batch_line`` makes the line of ``write``, counted without encoding
    it."""
    texts = (write.name, write.record or "", *write.tags, write.source)
    return (
        BATCH_LINE_FRAME_CHARS + JSON_CHARS_PER_CHAR * sum(map(len, texts)) + len(str(write.ttl_ms))
    )


def closed_batches(queued: Iterable[tuple[str, str]], current_period: int) -> list[tuple[str, str]]:
    """The queue entries ``(key, batch)`` no worker writes any more: those of periods before
    the previous one (a worker that read the clock at the end of a period may still write
    its batch early in the next). A key that names no period is closed: nothing writes it."""
    closed = []
    for key, batch in queued:
        period = key.partition(" ")[0]
        if not period.isdigit() or int(period) < current_period - 1:
            closed.append((key, batch))
    return closed


def batched_writes(batches: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Every write of the batches ``(key, batch)`` as ``(order key, encoded write)`` for
    ``coalesce``: the batch's period, then the write's monotonic ns."""
    lines = []
    for key, batch in batches:
        for line in str(batch).split("\n"):
            order, _, text = line.partition(" ")
            lines.append((order_key(key, order), text))
    return lines


def order_key(batch: str, order: str) -> str:
    """The place in the queue's order of a write of batch ``batch`` (``batch_key``) whose
    line starts with ``order`` (``order_text``): the batch's period, then the write's
    monotonic ns."""
    return f"{batch.partition(' ')[0]} {order}"


def coalesce(queued: Iterable[tuple[str, str]]) -> list[PendingWrite]:
    """The writes to send for queue entries ``(key, encoded write)`` (``batched_writes``):
    keys sort in queue order, and only the last write per Call-ID matters (a call shorter than
    one flush period costs Redis one DEL, or nothing: a delete queued after a set passed the
    SIP worker's check of its tags against that set's record). Entries that do not decode are
    skipped."""
    return latest_writes(decoded(queued))


def decoded(queued: Iterable[tuple[str, str]]) -> list[tuple[str, PendingWrite]]:
    """The entries ``(key, encoded write)`` that decode, decoded; the rest left out."""
    writes = []
    for key, text in queued:
        try:
            writes.append((key, PendingWrite.decode(text)))
        except ValueError:
            continue
    return writes


def latest_writes(ordered: Iterable[tuple[str, PendingWrite]]) -> list[PendingWrite]:
    """``coalesce`` of writes already decoded, each after its order key: the last per
    Call-ID, in queue order."""
    latest: dict[str, PendingWrite] = {}
    for _, write in sorted(ordered, key=_order):
        latest.pop(write.name, None)
        latest[write.name] = write
    return list(latest.values())


def _order(entry: tuple[str, PendingWrite]) -> str:
    return entry[0]


def within_cap(
    sets: Iterable[PendingWrite], held: Mapping[str, int], cap: int
) -> tuple[list[PendingWrite], list[PendingWrite]]:
    """The dialog records to write and those refused: a source (the record's ``source``)
    that holds ``held[source]`` records gets at most ``cap`` in all."""
    room = dict(held)
    written: list[PendingWrite] = []
    refused: list[PendingWrite] = []
    for write in sets:
        source = write.source
        if room.get(source, 0) < cap:
            room[source] = room.get(source, 0) + 1
            written.append(write)
        else:
            refused.append(write)
    return written, refused


def over_bytes(queued: Iterable[tuple[str, str]], max_bytes: int) -> list[tuple[str, str]]:
    """The oldest queue entries ``(key, encoded write)`` to drop so that the rest hold no more
    than ``max_bytes`` (keys and values; ``dialog_queue_max_bytes``): shared memory must not
    fill while Redis is away. A dropped record only matters to a request that arrives
    without its route set."""
    entries = sorted(queued)
    size = queue_bytes(entries)
    dropped = 0
    while size > max_bytes and dropped < len(entries):
        key, text = entries[dropped]
        size -= len(key) + len(text)
        dropped += 1
    return entries[:dropped]


def queue_bytes(queued: Iterable[tuple[str, str]]) -> int:
    """What queue entries ``(key, value)`` hold, as ``dialog_queue_max_bytes`` counts it."""
    return sum(len(key) + len(text) for key, text in queued)
