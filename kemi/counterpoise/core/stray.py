"""Which replies that match no transaction the balancer may forward, told from the reply alone.

Of a pair, the node that takes the floating address over receives the replies to what the
dead node relayed: no transaction of its own matches them, and Kamailio would forward each by
its next Via (stateless). A pool proxy may merely bounce a reply, though: a callee answering
after the proxy's transaction ended, with Vias [proxy, balancer, victim], has it reflected to
any victim. So the balancer signs, into its own Via of every dialog-forming request it relays
(``STRAY_PARAM``, a Via parameter: the reply carries it back), the Call-ID, the CSeq, the
upstream's Via branch and the address the request came from. A reply that matches no
transaction is forwarded only when that signature verifies against the reply's own Call-ID,
CSeq and next Via, read as Kamailio forwards by it (``received`` before the sent-by host,
``rport`` before its port): it then goes where a request of that very transaction came from,
and nowhere else. Every node holds the same keys (``dialog_seal``'s ring), so the survivor
verifies what the dead node signed.

Pure: the edge reads the Vias and asks ``signed`` and ``verifies``.
"""

from __future__ import annotations

import dataclasses
import hmac
import re

from counterpoise.core import dialog_seal

STRAY_PARAM = "cps3"
"""``<key id>.<signature>`` in the balancer's Via (``dialog_seal.native_mac``): the config's
``CP_SEAL`` route signs it, as ``signed`` defines."""
STRAY_PARAM_V2 = "cps2"
"""The signature before ``STRAY_PARAM`` (``dialog_seal.native_mac_v2``): checked, never made,
for the replies to requests a rolling upgrade's old node relayed."""
STRAY_PARAM_V1 = "cps"
"""The signature before ``STRAY_PARAM_V2`` (``dialog_seal.keyed_mac_v1``), checked as it."""
VERSIONS = (STRAY_PARAM, STRAY_PARAM_V2, STRAY_PARAM_V1)
"""Newest first: a reply is checked by the newest its Via carries."""
PURPOSE = b"cps3"
_PURPOSE_V2 = b"cps2"
_PURPOSE_V1 = b"cps1"
_DEFAULT_PORT = 5060
_TLS_PORT = 5061
_MAX_PARAM_CHARS = 64
_PORT = re.compile(r"[0-9]{1,5}")
_CSEQ = re.compile(r"[0-9]{1,10}")
"""ASCII digits only: ``str.isdigit`` takes ``²``, which ``int`` refuses."""


@dataclasses.dataclass(frozen=True)
class Upstream:
    """The hop a request came from, as a reply goes back to it: its transport, address and
    the branch of its Via (which names its transaction there)."""

    transport: str
    host: str
    port: int
    branch: str

    def fields(self) -> tuple[str, ...]:
        return self.transport, self.host, str(self.port), self.branch


def _host(text: str) -> str:
    return text.strip().strip("[]").lower()


def request_upstream(transport: str, host: str, port: int, branch: str) -> Upstream | None:
    """Where the request being relayed came from (``$pr``, ``$si``, ``$sp``) and its top Via's
    branch; None when one is missing (the request is relayed unsigned)."""
    if not transport or not host or not 0 < port < 65536 or not branch:
        return None
    return Upstream(transport.lower(), _host(host), port, branch)


def reply_upstream(
    transport: str | None,
    host: str | None,
    port: str | None,
    received: str | None,
    rport: str | None,
    branch: str | None,
) -> Upstream | None:
    """Where Kamailio forwards a reply by its next Via (RFC 3261 18.2.2, RFC 3581): the
    ``received`` address, else the sent-by host; the ``rport`` value, else the sent-by port,
    else the transport's default. None when the Via gives no address or no branch."""
    if not transport or not branch or not (received or host):
        return None
    default = _TLS_PORT if transport.lower() == "tls" else _DEFAULT_PORT
    number = next((text for text in (rport, port) if text and _PORT.fullmatch(text)), None)
    to_port = int(number) if number else default
    return request_upstream(transport, received or host or "", to_port, branch)


def _cseq(number: int | str, method: str) -> str:
    return f"{number} {method.upper()}"


def cseq_number(text: str | None) -> int | None:
    """A CSeq number as read (``$cs``), None unless plain digits."""
    return int(text) if text and _CSEQ.fullmatch(text) else None


def signed(
    key_id: str,
    secret: bytes,
    call_id: str,
    cseq: int,
    method: str,
    upstream: Upstream,
    version: str = STRAY_PARAM,
) -> str:
    """The value of Via parameter ``version`` (one of ``VERSIONS``; only ``STRAY_PARAM`` is
    made) for a request relayed from ``upstream``."""
    fields = (call_id, _cseq(cseq, method), *upstream.fields())
    if version == STRAY_PARAM_V1:
        return f"{key_id}.{dialog_seal.keyed_mac_v1(secret, _PURPOSE_V1, fields)}"
    if version == STRAY_PARAM_V2:
        return f"{key_id}.{dialog_seal.native_mac_v2(secret, _PURPOSE_V2, fields)}"
    return f"{key_id}.{dialog_seal.native_mac(secret, PURPOSE, fields)}"


def verifies(
    param: str | None,
    call_id: str | None,
    cseq: str | None,
    method: str | None,
    upstream: Upstream | None,
    secret_of: dialog_seal.SecretOf,
    version: str = STRAY_PARAM,
) -> bool:
    """Whether a reply whose top Via carries ``param`` as Via parameter ``version`` (one of
    ``VERSIONS``) answers a request this pool relayed from ``upstream`` (its next Via's
    hop) with this Call-ID and CSeq."""
    if not param or len(param) > _MAX_PARAM_CHARS or upstream is None:
        return False
    number = cseq_number(cseq)
    if not call_id or number is None or not method:
        return False
    key_id, _, mac = param.partition(".")
    secret = dialog_seal.named_secret(key_id, secret_of)
    if secret is None:
        return False
    expected = signed(key_id, secret, call_id, number, method, upstream, version)
    return hmac.compare_digest(f"{key_id}.{mac}", expected)
