"""Probes: an OPTIONS (or INVITE) to every proxy, sent by the sync loop with the uac module,
asking for the proxy's load (``X-CP-Load-Request``), and the BYE that ends an INVITE probe a
proxy answered with 2xx."""

from __future__ import annotations

import KSR

from counterpoise.core.reports import LOAD_REQUEST_HEADER
from counterpoise.core.settings import ProbeMethod
from counterpoise.kamailio import read


class UacProbeSender:
    """Sends a probe (OPTIONS, or INVITE to ``invite_user``) to a proxy with the uac module.

    The reply, or a local 408 after ``fr_timer_ms``, comes back to ``Balancer.on_uac_reply`` in some
    SIP worker, with the proxy and the send time in ``$uac_req(evparam)``. A 2xx to an INVITE
    probe is ended there with ``hang_up`` (tm sends the ACK of a locally sent INVITE itself).
    """

    def __init__(
        self, from_uri: str, contact_uri: str, method: ProbeMethod, invite_user: str
    ) -> None:
        self._from_uri = from_uri
        self._contact_uri = contact_uri or from_uri
        self._method = method
        self._invite_user = invite_user

    def send(self, uri: str, sent_ms: int) -> None:
        target = uri
        headers = f"Max-Forwards: 1\r\n{LOAD_REQUEST_HEADER}: 1\r\n"
        if self._method == ProbeMethod.INVITE:
            target = uri.replace("sip:", f"sip:{self._invite_user}@", 1)
            headers += f"Contact: <{self._contact_uri}>\r\n"
        KSR.pv.sets("$uac_req(method)", self._method)
        KSR.pv.sets("$uac_req(ruri)", target)
        KSR.pv.sets("$uac_req(furi)", self._from_uri)
        KSR.pv.sets("$uac_req(turi)", target)
        KSR.pv.sets("$uac_req(hdrs)", headers)
        KSR.pv.seti("$uac_req(evroute)", 1)
        KSR.pv.sets("$uac_req(evparam)", f"{sent_ms} {uri}")
        KSR.uac.uac_req_send()


def hang_up(proxy: str) -> None:
    """End the dialog a 2xx to an INVITE probe (the reply being handled) created: a BYE within
    it, sent through the probed proxy."""
    target = read.text("$(ct{tobody.uri})") or read.text("$ru") or ""
    cseq = str(read.value("$cs"))
    headers = (
        f"From: {read.text('$hdr(From)')}\r\n"
        f"To: {read.text('$hdr(To)')}\r\n"
        f"Call-ID: {read.text('$ci')}\r\n"
        f"CSeq: {int(cseq) + 1 if cseq.isdigit() else 2} BYE\r\n"
        "Max-Forwards: 1\r\n"
    )
    KSR.tm.t_uac_send("BYE", target, proxy, "", headers, "")
