"""Which in-dialog requests belong to a dialog the balancer made, told from the request alone.

When the balancer relays a dialog-forming request to a proxy, its Record-Route carries a seal:
the proxy that branch went to, the address the caller sent from, and a keyed signature
(``native_mac``: SHA-256 nested under two keys derived from the ring's secret) over them,
the Call-ID and the caller's From tag (rr's ``ftag``). Every node holds the same keys (Redis,
``store.dialog_keys``), so any node, also after a restart, can check that a Route entry was
put there by this pool for this dialog, and send the request on to where the seal says, never
to where the rest of the route set points:

- from the caller's side (its From tag is the sealed one): to the sealed proxy, on its
  transport and scheme; never from a pool proxy's address (the caller side is outside the
  pool), unless from the caller's own;
- from the callee's side (its To tag is the sealed one): only from the sealed proxy's
  address, to the address the caller sent its dialog-forming request from.

Kamailio's own config makes and checks the seal (``embed/counterpoise-dialog.cfg``: its
``s.sha256`` transformation and string operations, no Python per in-dialog request), so the
signature is one that config can compute (``native_mac``). This module is its definition,
which the tests hold that config to, and the check of the seals before it (``SEAL_PARAM_V2``,
``SEAL_PARAM_V1``): a dialog sealed before an upgrade still ends in the Python in-dialog
route, no new one is sealed so.

Pure: hmac and hashlib only; the edge reads the Route, tags and source and asks ``admit``.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import functools
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping

from counterpoise.core import edge
from counterpoise.core.untrusted import BadRecord, untrusted

SEAL_PARAM = "cpd3"
"""``<key id>.<signature>`` (``signature``)."""
SEAL_PARAM_V2 = "cpd2"
"""The seal before ``SEAL_PARAM`` (``native_mac_v2``: OpenSSL's HMAC through Kamailio's crypto
module, four a call, a measured share of every call's CPU: docs/benchmarks.md): checked,
never made, so that the dialogs of a rolling upgrade's old nodes end on the new ones."""
SEAL_PARAM_V1 = "cpd"
"""The seal before ``SEAL_PARAM_V2`` (``signature_v1``), checked, never made, as it. Neither
signs anything any more: each may go once no dialog sealed so can be alive (a dialog outlives
two key rotations at most)."""
PURPOSE = b"cpd3"
PURPOSE_V2 = b"cpd2"
PROXY_PARAM = "cpp"
"""The sealed proxy: ``<scheme>:<transport>:<host>:<port>``."""
CALLER_PARAM = "cpc"
"""The caller's source: ``<transport>:<host>:<port>``."""
FROM_TAG_PARAM = "ftag"
"""rr's own parameter (``append_fromtag``): the From tag of the dialog-forming request."""
MAC_CHARS = 33
"""132 bits of the signature (hex, 4 bits a character): beyond guessing for the lifetime of
any key."""
MAC_CHARS_V2 = 22
"""The same 132 bits in ``native_mac_v2``'s base64."""
INNER_KEY, OUTER_KEY = b"counterpoise seal inner key", b"counterpoise seal outer key"
"""What each of a secret's two derived keys (``derived_keys``) is the HMAC of."""
MAC_BYTES_V1 = 16
SECRET_BYTES = 32
"""A key is 256 random bits, SHA-256's block of security."""
KEPT_KEYS = 3
"""A rotation keeps the two keys before the new one valid: a dialog outlives two rotations."""
ACTIVATION_DELAY_MS = 10_000
"""A rotated key seals nothing before this: ten reloads of the ring on every node (each
second), and room for the nodes' clocks to differ by a few seconds."""
TRANSPORTS = frozenset({"udp", "tcp", "tls", "sctp", "ws", "wss"})
_MAX_PARAM_CHARS = 300
_HOP = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(?P<port>\d{1,5})$")
_KEY_ID = re.compile(r"^[0-9]{1,9}$")
HOPS_MEMO = 1024
"""Hops a process remembers the parse of: the pool's proxies and the callers of its current
dialogs recur in every seal and check; a flood of new ones only refills the memo."""


@dataclasses.dataclass(frozen=True)
class Hop:
    """Where a request goes or came from: scheme, transport, host (IPv6 unbracketed), port."""

    scheme: str
    transport: str
    host: str
    port: int

    @property
    def address(self) -> edge.Address:
        return self.host, self.port

    def hostport(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def sealed(self) -> str:
        """The form in the seal (a URI parameter value: no ``;``, ``=`` or ``,``)."""
        return f"{self.scheme}:{self.transport}:{self.hostport()}"

    def uri(self) -> str:
        """A destination URI (``$du``) that sends on exactly this transport and scheme."""
        return f"{self.scheme}:{self.hostport()};transport={self.transport}"


def hop(scheme: str, transport: str, host: str, port: int | str | None) -> Hop | None:
    """A normalised ``Hop``, or None for an unknown scheme or transport or a bad port."""
    scheme, transport = scheme.lower(), transport.lower()
    if scheme not in edge.DEFAULT_PORTS or transport not in TRANSPORTS:
        return None
    host_text, number = edge.hop(host, port, scheme)
    if not host_text or not 0 < number < 65536:
        return None
    return Hop(scheme, transport, host_text, number)


@functools.lru_cache(maxsize=HOPS_MEMO)
def proxy_hop(uri: str) -> Hop | None:
    """Where a proxy URI of the pool sends: its transport parameter, else UDP for ``sip``
    and TLS for ``sips`` (RFC 3263's defaults without NAPTR)."""
    named = edge.uri_hop(uri)
    if named is None:
        return None
    scheme = uri.strip().split(":", 1)[0].lower()
    transport = _uri_params(uri).get("transport", "tls" if scheme == "sips" else "udp")
    return hop(scheme, transport, *named)


def caller_hop(transport: str, host: str, port: int | None) -> Hop | None:
    """The caller's source as the balancer saw it (``$pr``, ``$si``, ``$sp``)."""
    return hop("sip", transport, host, port)


@functools.lru_cache(maxsize=HOPS_MEMO)
def _parse_hop(text: str, with_scheme: bool) -> Hop | None:
    parts = text.split(":", 2 if with_scheme else 1)
    if len(parts) != (3 if with_scheme else 2):
        return None
    scheme = parts[0] if with_scheme else "sip"
    match = _HOP.match(parts[-1])
    if match is None:
        return None
    return hop(scheme, parts[-2], match.group("host"), match.group("port"))


@dataclasses.dataclass(frozen=True)
class Seal:
    """What a signature binds: one dialog, the proxy its branch went to, and its caller."""

    call_id: str
    from_tag: str
    proxy: Hop
    caller: Hop

    def fields(self) -> tuple[str, ...]:
        """What ``signature`` signs: the Call-ID, the From tag and the two hop parameters as
        they stand in the Record-Route."""
        return self.call_id, self.from_tag, self.proxy.sealed(), caller_param(self.caller)


def caller_param(caller: Hop) -> str:
    """The caller's source as ``CALLER_PARAM`` holds it."""
    return f"{caller.transport}:{caller.hostport()}"


def _message(purpose: bytes, fields: Iterable[str]) -> bytes:
    """``purpose`` (a signature made for one use is no signature for another) then each field
    as ``<bytes>:<field>`` (no two different field lists sign the same bytes, whatever they
    hold)."""
    return purpose + b"".join(
        str(len(data)).encode() + b":" + data for data in (field.encode() for field in fields)
    )


@functools.lru_cache(maxsize=KEPT_KEYS * 4)
def derived_keys(secret: bytes) -> tuple[str, str]:
    """The inner and outer keys of ``native_mac``, as the ring's shared memory holds them:
    the hex text of HMAC-SHA256 of ``INNER_KEY`` and of ``OUTER_KEY`` under the secret. Each
    is 64 characters, one whole SHA-256 block, and neither tells the other or the secret."""
    inner, outer = (
        hmac.new(secret, label, hashlib.sha256).hexdigest() for label in (INNER_KEY, OUTER_KEY)
    )
    return inner, outer


def native_mac(secret: bytes, purpose: bytes, fields: Iterable[str]) -> str:
    """The signature as a Kamailio config computes it with its ``s.sha256`` transformation
    (Kamailio's own SHA-256, lower-case hex; no OpenSSL call per message): SHA-256 of the
    outer key and the hex of SHA-256 of the inner key and the message (``derived_keys``,
    ``_message``); the first ``MAC_CHARS`` characters, a SIP parameter value.

    This is HMAC's nested construction (NMAC): each key fills SHA-256's first block, so each
    hash starts from a secret state; the outer hash takes a fixed-length input, so the inner
    hash cannot be extended, and the cut to 132 of 256 bits keeps the outer one from being
    extended too. HMAC itself cannot be written with the transformation: its padded keys are
    bytes a config string does not hold, and its outer hash takes the inner digest's bytes."""
    inner, outer = derived_keys(secret)
    digest = hashlib.sha256(inner.encode() + _message(purpose, fields)).hexdigest()
    return hashlib.sha256((outer + digest).encode()).hexdigest()[:MAC_CHARS]


def native_mac_v2(secret: bytes, purpose: bytes, fields: Iterable[str]) -> str:
    """The signature of ``SEAL_PARAM_V2`` and ``stray.STRAY_PARAM_V2``, only checked:
    crypto's ``crypto_hmac_sha256`` keyed with the secret's hex text, over ``_message``, the
    first ``MAC_CHARS_V2`` characters of the digest's URL-safe base64."""
    digest = hmac.new(secret.hex().encode(), _message(purpose, fields), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode()[:MAC_CHARS_V2]


def keyed_mac_v1(secret: bytes, purpose: bytes, fields: Iterable[str]) -> str:
    """The signature before ``native_mac``: HMAC-SHA256 keyed with the secret's bytes, over
    4-byte length-prefixed fields after ``purpose``, cut to ``MAC_BYTES_V1``, URL-safe base64
    without padding. Only checked (``SEAL_PARAM_V1``, ``stray.STRAY_PARAM_V1``)."""
    message = purpose + b"".join(
        len(data).to_bytes(4, "big") + data for data in (field.encode() for field in fields)
    )
    mac = hmac.new(secret, message, hashlib.sha256).digest()[:MAC_BYTES_V1]
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def signature(secret: bytes, seal: Seal) -> str:
    return native_mac(secret, PURPOSE, seal.fields())


def signature_v1(secret: bytes, seal: Seal) -> str:
    fields = (seal.call_id, seal.from_tag, seal.proxy.sealed(), seal.caller.sealed())
    return keyed_mac_v1(secret, b"cpd1", fields)


def record_route_params(key_id: str, secret: bytes, seal: Seal) -> str:
    """The parameters the balancer adds to its Record-Route (rr adds ``ftag`` itself): what
    the config's ``CP_SEAL`` route writes."""
    return (
        f";{PROXY_PARAM}={seal.proxy.sealed()};{CALLER_PARAM}={caller_param(seal.caller)}"
        f";{SEAL_PARAM}={key_id}.{signature(secret, seal)}"
    )


def _uri_params(uri: str) -> dict[str, str]:
    """A SIP URI's parameters (before any ``?`` headers or ``>``), names lower-cased; the
    first of a repeated name counts."""
    body = uri.strip().strip("<>").split("?", 1)[0].split(">", 1)[0]
    params: dict[str, str] = {}
    for item in body.split(";")[1:]:
        name, _, value = item.partition("=")
        params.setdefault(name.strip().lower(), value.strip())
    return params


SecretOf = Callable[[str], bytes | None]
"""A key id's secret, None when the ring has no such key."""


def named_secret(key_id: str, secret_of: SecretOf) -> bytes | None:
    """The secret of the key a hostile parameter names, None when it names none."""
    return secret_of(key_id) if _KEY_ID.match(key_id) else None


def read_seal(route_uri: str, call_id: str, secret_of: SecretOf) -> Seal | None:
    """The seal of a Route URI when its signature is valid under the key it names, else
    None. Whatever a hostile Route holds, the answer is a Seal or None."""
    try:
        return untrusted(lambda: _read_seal(route_uri, call_id, secret_of))
    except BadRecord:
        return None


def _read_seal(route_uri: str, call_id: str, secret_of: SecretOf) -> Seal | None:
    """A seal of any version; a Route carrying more than one is read as the newest alone."""
    params = _uri_params(route_uri)
    version = next((name for name in (SEAL_PARAM, SEAL_PARAM_V2) if params.get(name)), None)
    v1 = version is None
    names = (version or SEAL_PARAM_V1, PROXY_PARAM, CALLER_PARAM)
    values = [params.get(name, "") for name in names]
    from_tag = params.get(FROM_TAG_PARAM, "")
    if not all(values) or not from_tag or any(len(v) > _MAX_PARAM_CHARS for v in values):
        return None
    key_id, _, mac = values[0].partition(".")
    secret = named_secret(key_id, secret_of)
    proxy, caller = _parse_hop(values[1], True), _parse_hop(values[2], False)
    if secret is None or proxy is None or caller is None:
        return None
    seal = Seal(call_id, from_tag, proxy, caller)
    if v1:
        return seal if hmac.compare_digest(mac, signature_v1(secret, seal)) else None
    # The config checks the parameters as they stand: so does this definition of its check.
    fields = (call_id, from_tag, values[1], values[2])
    if version == SEAL_PARAM_V2:
        expected = native_mac_v2(secret, PURPOSE_V2, fields)
    else:
        expected = native_mac(secret, PURPOSE, fields)
    return seal if hmac.compare_digest(mac, expected) else None


class Direction(enum.Enum):
    TO_CALLEE = "to_callee"
    TO_CALLER = "to_caller"


def direction(seal: Seal, from_tag: str | None, to_tag: str | None) -> Direction | None:
    """Which way a request of the sealed dialog goes, by whose tag is the sealed one."""
    if from_tag == seal.from_tag:
        return Direction.TO_CALLEE
    if to_tag == seal.from_tag:
        return Direction.TO_CALLER
    return None


@dataclasses.dataclass(frozen=True)
class Request:
    """What the edge reads of an in-dialog request to judge it."""

    route_uri: str
    call_id: str
    from_tag: str | None
    to_tag: str | None
    source: edge.Address
    stream: bool


def admit(
    request: Request,
    secret_of: SecretOf,
    pool: frozenset[edge.Address],
    addresses_of: Callable[[Hop], frozenset[edge.Address]],
) -> Hop | None:
    """Where an in-dialog request whose top Route is ``route_uri`` goes, or None: refused.

    ``pool``: every pool proxy's address; ``addresses_of``: where the sealed proxy may be
    seen (its URI's address and those its name resolves to)."""
    seal = read_seal(request.route_uri, request.call_id, secret_of)
    if seal is None:
        return None
    way = direction(seal, request.from_tag, request.to_tag)
    if way == Direction.TO_CALLEE:
        # From the pool it is a route set bounced through a proxy's loose_route, unless it
        # comes from the very address the caller called from (a caller on a proxy's host,
        # over TCP, where a proxy is known by its host alone).
        caller = request.source == seal.caller.address
        from_pool = edge.from_pool(request.source, request.stream, pool)
        return seal.proxy if caller or not from_pool else None
    if way == Direction.TO_CALLER:
        proxy = addresses_of(seal.proxy) | {seal.proxy.address}
        return seal.caller if edge.from_pool(request.source, request.stream, proxy) else None
    return None


def source_keys(hops: Mapping[str, frozenset[edge.Address]]) -> frozenset[str]:
    """What the config's in-dialog route looks a source up by, given each pool proxy's
    addresses (``edge.pool_hops``), host and port as ``Hop.hostport`` writes them: every pool
    address (``<host>:<port>``) and its host (a proxy connects from any port); and, for the
    sealed form of each proxy (``Hop.sealed``), ``<sealed>|<host>:<port>`` and
    ``<sealed>|<host>`` of each of its addresses: ``admit``'s ``pool`` and ``addresses_of``."""
    keys: set[str] = set()
    for uri, addresses in hops.items():
        proxy = proxy_hop(uri)
        for host, port in addresses:
            at = Hop("sip", "udp", host, port)
            hostport, bare = at.hostport(), at.hostport().rpartition(":")[0]
            keys.update((hostport, bare))
            if proxy is not None:
                keys.update((f"{proxy.sealed()}|{hostport}", f"{proxy.sealed()}|{bare}"))
    return frozenset(keys)


# --- the key ring -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DialogKey:
    key_id: str
    active_from_ms: int
    """Wall-clock ms from which nodes sign with it: every node has loaded it by then."""
    secret: bytes

    def encode(self) -> str:
        return f"{self.active_from_ms} {self.secret.hex()}"


def parse_key(key_id: str, value: str) -> DialogKey:
    """One field of the key ring's hash; raises ``BadRecord``."""

    def parse() -> DialogKey:
        if not _KEY_ID.match(key_id):
            raise BadRecord(f"key id {key_id!r} is not a number")
        active, _, secret = value.partition(" ")
        key = DialogKey(key_id, int(active), bytes.fromhex(secret))
        if len(key.secret) < SECRET_BYTES:
            raise BadRecord(f"key {key_id} is shorter than {SECRET_BYTES} bytes")
        return key

    return untrusted(parse)


def signing_key(ring: Mapping[str, DialogKey], now_wall_ms: int) -> DialogKey | None:
    """The newest key already active (the first key is active at once); when none is yet
    (rotations faster than the activation delay dropped the active one), the oldest."""
    active = [key for key in ring.values() if key.active_from_ms <= now_wall_ms]
    if active:
        return max(active, key=lambda key: int(key.key_id))
    return min(ring.values(), key=lambda key: int(key.key_id), default=None)


def rotated(
    ring: Mapping[str, DialogKey], secret: bytes, active_from_ms: int
) -> tuple[DialogKey, list[str]]:
    """The next key, and the ids a rotation drops (all but the ``KEPT_KEYS - 1`` newest)."""
    ids = sorted((int(key_id) for key_id in ring), reverse=True)
    new = DialogKey(str((ids[0] if ids else 0) + 1), active_from_ms, secret)
    return new, [str(key_id) for key_id in ids[KEPT_KEYS - 1 :]]
