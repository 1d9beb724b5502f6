"""The config's own dialog routes (``embed/counterpoise-dialog.cfg``) as the fake KSR runs them
for ``KSR.route``: the same steps on the fake's state, the seal and the Via signature computed
by their definition in the core (``dialog_seal.native_mac``). The e2e tests hold the real
routes to that definition; these let the unit tests run the KEMI edge around them."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from counterpoise.core import dialog_seal, stray

if TYPE_CHECKING:
    from .ksr import FakeKsr

ADMITTED = "$var(cp_admitted)"
_PARAM = re.compile(r";([^;=>]+)=([^;>]*)")


def _param(uri: str | None, name: str) -> str:
    found = dict(_PARAM.findall(uri or ""))
    return found.get(name, "")


def _secret(ksr: FakeKsr, key_id: str) -> bytes | None:
    """The secret the route signs with: that of the key whose derived keys the ring's entries
    hold (``CP_MAC`` reads those alone; here they must be the key's own)."""
    table = ksr.htables["cpkey"]
    inner, outer = table.get(f"ki {key_id}"), table.get(f"ko {key_id}")
    record = table.get(key_id)
    if not isinstance(inner, str) or not isinstance(record, str) or len(key_id) > 9:
        return None
    secret = dialog_seal.parse_key(key_id, record).secret
    assert dialog_seal.derived_keys(secret) == (inner, outer)
    return secret


def _count(ksr: FakeKsr, table: str, key: str) -> None:
    """``$shtinc``: no key is created."""
    if isinstance(ksr.htables[table].get(key), int):
        ksr.htables[table][key] += 1  # type: ignore[operator]


def _bracketed(host: str) -> str:
    host = host.lower()
    return f"[{host}]" if ":" in host else host


def in_dialog(ksr: FakeKsr) -> int:
    """``CP_IN_DIALOG`` under KEMI: 0 when relayed or refused, -1 when left to Python."""
    ksr.pvs[ADMITTED] = 0
    top = re.match(r"\s*<([^>]*)>", ksr.header("Route") or "")
    route_uri = top.group(1) if top else None
    seal = _param(route_uri, dialog_seal.SEAL_PARAM)
    if not seal:
        return -1
    ftag, proxy, caller = (_param(route_uri, n) for n in ("ftag", "cpp", "cpc"))
    key_id, _, mac = seal.partition(".")
    secret = _secret(ksr, key_id)
    call_id = str(ksr.pvs.get("$ci"))
    if not (ftag and proxy and caller) or secret is None:
        return _deny(ksr)
    fields = (call_id, ftag, proxy, caller)
    if dialog_seal.native_mac(secret, dialog_seal.PURPOSE, fields) != mac.split(".")[0]:
        return _deny(ksr)
    host = _bracketed(str(ksr.pvs["$si"]))
    source = f"{host}:{ksr.pvs['$sp']}"
    udp = ksr.pvs.get("$pr") == "udp"
    proxy_at = re.sub(r"^[a-z]+:[a-z]+:", "", proxy)
    caller_at = re.sub(r"^[a-z]+:", "", caller)
    known = ksr.htables["cpaddr"]
    if ksr.pvs.get("$ft") == ftag:
        if source != caller_at and (source in known or (not udp and host in known)):
            return _deny(ksr)
        scheme, transport = proxy.split(":")[:2]
        destination = f"{scheme}:{proxy_at};transport={transport}"
    elif ksr.pvs.get("$tt") == ftag:
        if source != proxy_at and f"{proxy}|{source}" not in known:
            proxy_host = re.sub(r":[0-9]+$", "", proxy_at)
            if udp or (host != proxy_host and f"{proxy}|{host}" not in known):
                return _deny(ksr)
        destination = f"sip:{caller_at};transport={caller.split(':')[0]}"
    else:
        return _deny(ksr)
    if ksr.module.rr.loose_route() < 0:
        return _deny(ksr)
    ksr.pvs[ADMITTED] = 1
    ksr.pvs["$du"] = destination
    timer_ms = ksr.htables["cp"].get("in_dialog_fr_timer_ms")
    ksr.module.tm.t_set_fr(0, timer_ms if isinstance(timer_ms, int) else 0)
    if ksr.module.tm.t_relay() >= 0:
        _count(ksr, "cpstat", "in_dialog_record_route")
    return 0


def _deny(ksr: FakeKsr) -> int:
    _count(ksr, "cpedge", "relay_denied")
    if ksr.pvs.get("$rm") != "ACK":
        ksr.sl_replies.append((403, "Forbidden"))
    return 0


def seal(ksr: FakeKsr) -> int:
    """``CP_SEAL``: the branch's Record-Route sealed and its Via signed."""
    key_id = ksr.htables["cpkey"].get("signing")
    proxy = (ksr.avps.get("cpsp") or [None])[-1]
    call_id, from_tag = ksr.pvs.get("$ci"), ksr.pvs.get("$ft")
    secret = _secret(ksr, str(key_id)) if key_id is not None else None
    if secret is None or not proxy or not isinstance(proxy, str) or not from_tag or not call_id:
        _count(ksr, "cpedge", "unsealed")
        ksr.record_routed = True
        return 1
    host, port, transport = str(ksr.pvs["$si"]).lower(), int(ksr.pvs["$sp"]), str(ksr.pvs["$pr"])
    caller = f"{transport}:{_bracketed(host)}:{port}"
    fields = (str(call_id), str(from_tag), proxy, caller)
    mac = dialog_seal.native_mac(secret, dialog_seal.PURPOSE, fields)
    ksr.record_routed = True
    ksr.record_route_params = f";cpp={proxy};cpc={caller};{dialog_seal.SEAL_PARAM}={key_id}.{mac}"
    branch = ksr.vias[0].get("branch") if ksr.vias else None
    if not branch:
        return 1
    upstream = stray.Upstream(transport, host, port, branch)
    cseq, method = int(str(ksr.pvs["$cs"])), str(ksr.pvs["$rm"]).upper()
    ksr.via_xavp[stray.STRAY_PARAM] = stray.signed(
        str(key_id), secret, str(call_id), cseq, method, upstream
    )
    ksr.via_xavp_added = True
    return 1


ROUTES = {"CP_IN_DIALOG": in_dialog, "CP_SEAL": seal}
