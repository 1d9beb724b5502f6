"""A fake of Kamailio's ``KSR`` module, for unit tests of the KEMI edge (``counterpoise.kamailio``).

Shaped like Kamailio's own ``misc/tools/kemi/python_mock``: a module object whose attributes
are the sub-APIs (``KSR.tm``, ``KSR.pv``, ...) and the core functions (``KSR.is_ACK``...), and
a way for the test to set what any function returns. Unlike that generated mock it keeps
state, so the edge can be run as Kamailio runs it: pseudo-variables of the message being
handled, the transaction's AVPs (kept from the request route to its reply and failure
routes), the hash tables declared in ``kamailio.cfg`` (and only those), and a record of what
the edge did (relays, stateless replies, probes, log lines).

Use it through the ``ksr`` fixture (``tests/unit/conftest.py``), which installs the module as
``sys.modules["KSR"]`` and rebinds ``KSR`` in edge modules imported before. A test then plays
Kamailio: ``ksr.request("INVITE", "sip:bob@lb")``, calls a route of ``Embedded``, plays a reply
(``ksr.reply(180)``) or a failure (``ksr.failure(408, timeout=True)``), and reads
``ksr.relays``, ``ksr.sl_replies``, ``ksr.htables``, ``ksr.avps``, ``ksr.calls``.

Return conventions are the real ones (app_python3 turns a function's ``SR_KEMIP_*`` return
type into Python): BOOL -> ``True``/``False`` (``is_*``, ``setdsturi``, ``pv.sets``,
``pv.seti``, ``pv.is_null``); INT -> an int, negative for false (``tm``, ``sl``, ``rr``,
``htable``, ``siputils``, ``maxfwd``, ``sanity``, ``corex``, ``uac``, ``hdr.insert``,
``hdr.append``); XVAL ->
int, str or None (``pv.get``, ``hdr.get``, ``htable.sht_get``; the ``gete`` variants give ""
instead of None); NONE -> None (``dbg``, ``info``, ``notice``, ``err``).

Overriding a result: ``ksr.returns["tm.t_relay"] = -1`` (core functions have no prefix:
``ksr.returns["is_myself_ruri"] = True``), or a callable taking the call's arguments. An
override replaces the function's behaviour: nothing else happens. Every call is recorded in
``ksr.calls`` as ``(name, args)``.

To add a KSR function the edge starts to call:

1. Find its export in Kamailio 5.6's source, the module's ``sr_kemi_t`` table (for example
   ``src/modules/tm/tm.c``; core functions in ``src/core/kemi.c``): its return type says what
   Python gets (above), its parameter types what it takes.
2. Add a method of that name to the sub-API class below (``Tm``, ``Htable``...; a new
   sub-API is a new ``_Api`` subclass with its ``prefix``, listed in ``FakeKsr.__init__``),
   or to ``Core`` for a function without a sub-API, decorated ``@_kemi``. It reads and writes
   the state in ``self.ksr`` and returns what Kamailio returns in the common case.
3. A new pseudo-variable of the message: add its name to ``MESSAGE_PVS`` (the test sets it in
   ``ksr.pvs``); a new class of them (``$name(key)``): a branch in ``Pv._slot`` (``$hdr(X)``
   and ``$(hdr(X)[*])`` read ``ksr.headers``). Reading a name the fake does not know raises,
   so a typo in the edge fails the test.
"""

from __future__ import annotations

import functools
import re
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

Value = int | str | bytes
"""bytes: a message value that is not UTF-8 (reading it raises, as in app_python3)."""
EMBED_CFG = Path(__file__).resolve().parents[2] / "embed" / "counterpoise.cfg"
"""The include that declares the node's hash tables, for ``kamailio.cfg`` and embedders."""
MYSELF = "192.0.2.1"
"""The balancer's own address (``is_myself_ruri``)."""
BLIND_BRANCH: dict[str, Any] = {"ruri": None, "duri": None, "blind": True}
"""What ``relays`` holds for tm's branch of no destination of a resumed transaction."""
HT_NO_INT_VALUE = -255
"""What ``sht_inc``/``sht_dec`` return on a missing key of a table without an initial value
(htable.c ``KSR_HT_KEMI_NOINTVAL``): they do not create it."""

MESSAGE_PVS = frozenset(
    {
        "$ru", "$rU", "$rd", "$du", "$rm", "$si", "$sp", "$pr", "$ci", "$cs", "$ft", "$tt",
        "$tU", "$td",
        "$rs", "$T_branch_idx", "$T_reply_code", "$(ct{tobody.uri})", "$T(id_index)",
        "$T(id_label)", "$route_uri", "$mb",
    }
)  # fmt: skip
"""Pseudo-variables of the message being handled that the fake knows (values in ``pvs``)."""
SCRIPT_VARS = frozenset({"$var(cp_index)", "$var(cp_label)", "$var(cp_admitted)"})
"""A native config's script variables the edge sets (kept in ``pvs`` too)."""
WRITABLE_PVS = frozenset({"$ru", "$du", *SCRIPT_VARS})
_SLOT = re.compile(r"^\$(avp|uac_req|shtitkey|shtitval|hdr|nh)\(([^)]+)\)$")
_VIA_SELECT = re.compile(r"^\$sel\(via\[(\d)\]\.([a-z0-9.]+)\)$")
"""``$sel(via[N].host)``, ``$sel(via[N].params.NAME)``: the Nth Via of ``FakeKsr.vias``."""
_VIA_XAVP = re.compile(r"^\$xavp\(via=>([a-z0-9]+)\)$")
"""A field of the xavp the core's ``xavp_via_params`` names (``via``)."""
_SHT = re.compile(r"^\$sht\((\w+)=>(.*)\)$")
"""``$sht(table=>key)``, the key a format: the message's pseudo-variables in it replaced."""
_ALL_HEADERS = re.compile(r"^\$\(hdr\(([^)]+)\)\[\*\]\)$")
_URI = re.compile(r"^sips?:(?:(?P<user>[^@;]+)@)?(?P<host>\[[^\]]+\]|[^:;>]+)")


def declared_htables(cfg: Path = EMBED_CFG) -> dict[str, int | None]:
    """The hash tables ``cfg`` declares (``modparam("htable", "htable", "name=>...")``), with
    their ``initval`` (what ``sht_inc`` starts a missing key from; None: it does not)."""
    tables = re.findall(r'modparam\("htable",\s*"htable",\s*"(\w+)=>([^"]*)"', cfg.read_text())
    initial = {name: re.search(r"initval=(-?\d+)", attributes) for name, attributes in tables}
    return {name: int(found.group(1)) if found else None for name, found in initial.items()}


def _kemi(function: Callable[..., Any]) -> Callable[..., Any]:
    """Record the call, then return the test's override if it set one, else run the fake."""

    @functools.wraps(function)
    def call(self: _Api, *args: Any) -> Any:
        name = self.prefix + function.__name__
        self.ksr.calls.append((name, args))
        if name in self.ksr.returns:
            result = self.ksr.returns[name]
            return result(*args) if callable(result) else result
        return function(self, *args)

    call.kemi = True  # type: ignore[attr-defined]
    return call


class _Api:
    prefix = ""

    def __init__(self, ksr: FakeKsr) -> None:
        self.ksr = ksr


class Core(_Api):
    """The functions without a sub-API (``KSR.is_ACK()``...), copied onto the module."""

    def _is(self, method: str) -> bool:
        return self.ksr.pvs.get("$rm") == method

    @_kemi
    def is_ACK(self) -> bool:
        return self._is("ACK")

    @_kemi
    def is_BYE(self) -> bool:
        return self._is("BYE")

    @_kemi
    def is_INVITE(self) -> bool:
        return self._is("INVITE")

    @_kemi
    def is_CANCEL(self) -> bool:
        return self._is("CANCEL")

    @_kemi
    def is_OPTIONS(self) -> bool:
        return self._is("OPTIONS")

    @_kemi
    def is_REFER(self) -> bool:
        return self._is("REFER")

    @_kemi
    def is_REGISTER(self) -> bool:
        return self._is("REGISTER")

    @_kemi
    def is_method_in(self, letters: str) -> bool:
        # kemi.c sr_kemi_core_is_method_in: one letter per method (F is REFER, E is PRACK).
        methods = {
            "I": "INVITE", "A": "ACK", "B": "BYE", "C": "CANCEL", "M": "MESSAGE",
            "R": "REGISTER", "E": "PRACK", "P": "PUBLISH", "S": "SUBSCRIBE", "N": "NOTIFY",
            "O": "OPTIONS", "F": "REFER", "G": "GET", "U": "UPDATE",
        }  # fmt: skip
        return any(self._is(methods.get(letter.upper(), "")) for letter in letters)

    @_kemi
    def is_myself_ruri(self) -> bool:
        return self.ksr.pvs.get("$rd") in self.ksr.myself

    @_kemi
    def route(self, name: str) -> int:
        """Runs a native route of the config (``fakes.native``): what it returns, 0 when it
        ended with ``exit``."""
        from . import native

        return native.ROUTES[name](self.ksr)

    @_kemi
    def set_drop(self) -> None:
        """In a reply route: do not forward the reply being handled."""
        self.ksr.dropped = True

    @_kemi
    def setdsturi(self, uri: str) -> bool:
        self.ksr.pvs["$du"] = _text(uri)
        return True

    @_kemi
    def forward_uri(self, uri: str) -> int:
        """Stateless forwarding of the request to ``uri`` (kemi.c sr_kemi_core_forward_uri)."""
        self.ksr.forwards.append(_text(uri))
        return 1

    @_kemi
    def dbg(self, text: str) -> None:
        self.ksr.logs.append(("dbg", text))

    @_kemi
    def info(self, text: str) -> None:
        self.ksr.logs.append(("info", text))

    @_kemi
    def notice(self, text: str) -> None:
        self.ksr.logs.append(("notice", text))

    @_kemi
    def err(self, text: str) -> None:
        self.ksr.logs.append(("err", text))


class Pv(_Api):
    prefix = "pv."

    def _slot(self, spec: str) -> tuple[dict[str, Any], str]:
        """The dict holding ``spec`` and its key there."""
        every = _ALL_HEADERS.match(spec)  # $(hdr(Name)[*]): the fake has one value a header
        if every:
            spec = f"$hdr({every.group(1)})"
        via = _VIA_SELECT.match(spec)
        if via:
            index, field = int(via.group(1)) - 1, via.group(2)
            found = self.ksr.vias[index] if index < len(self.ksr.vias) else {}
            return found, field
        sht = _SHT.match(spec)
        if sht:
            table, key = sht.group(1), re.sub(r"\$\w+", self._formatted, sht.group(2))
            return self.ksr.module.htable._table(table), key
        if spec == "$route_uri":  # rr's: the URI of the top Route
            top = re.match(r"\s*<([^>]*)>", self.ksr.header("Route") or "")
            return ({spec: top.group(1)} if top else {}), spec
        match = _SLOT.match(spec)
        if match is None:
            if spec not in MESSAGE_PVS | SCRIPT_VARS:
                raise KeyError(f"the fake KSR does not know {spec}: add it to MESSAGE_PVS")
            return self.ksr.pvs, spec
        kind, key = match.groups()
        if kind == "avp":
            top = {key: stack[-1] for key, stack in self.ksr.avps.items() if stack}
            return top, key
        if kind == "uac_req":
            return self.ksr.uac_req, key
        if kind == "hdr":
            value = self.ksr.header(key)
            return ({} if value is None else {key: value}), key
        if kind == "nh":  # the next hop: $du when set, else the R-URI; port 5060 by default
            target = _URI.match(str(self.ksr.pvs.get("$du") or self.ksr.pvs.get("$ru") or ""))
            if target is None:
                return {}, key
            port = re.match(r":(\d+)", str(target.string[target.end() :]))
            hop = {"d": target.group("host"), "p": int(port.group(1)) if port else 5060}
            return hop, key
        item = self.ksr.iterated.get(key)
        current = {} if item is None else {key: item[0 if kind == "shtitkey" else 1]}
        return current, key

    def _formatted(self, name: re.Match[str]) -> str:
        """A pseudo-variable in a format (``$si``): its value as text, ``<null>`` if none."""
        value = self._slot(name.group(0))[0].get(name.group(0))
        return "<null>" if value is None else str(value)

    def _set(self, spec: str, value: Value) -> bool:
        match = _SLOT.match(spec)
        if match and match.group(1) == "avp":
            self.ksr.avps.setdefault(match.group(2), []).append(value)  # adds on top
        elif match and match.group(1) == "uac_req":
            self.ksr.uac_req[match.group(2)] = value
        elif _VIA_XAVP.match(spec):
            self.ksr.via_xavp[_VIA_XAVP.match(spec).group(1)] = _text(value)  # type: ignore[union-attr]
        elif spec in WRITABLE_PVS:
            self.ksr.pvs[spec] = value
            if spec == "$ru":
                self.ksr.pvs.update(_uri_parts(str(value), "$rU", "$rd"))
        else:
            raise KeyError(f"the fake KSR cannot set {spec}")
        return True

    def _get(self, spec: str) -> Value | None:
        values, key = self._slot(spec)
        value = values.get(key)
        # app_python3 decodes strictly: a value holding bytes that are not UTF-8 raises.
        return value.decode() if isinstance(value, bytes) else value

    @_kemi
    def get(self, spec: str) -> Value | None:
        return self._get(spec)

    @_kemi
    def gete(self, spec: str) -> Value:
        value = self._get(spec)
        return "" if value is None else value

    @_kemi
    def is_null(self, spec: str) -> bool:
        return self._get(spec) is None

    @_kemi
    def sets(self, spec: str, value: str) -> bool:
        return self._set(spec, _text(value))

    @_kemi
    def seti(self, spec: str, value: int) -> bool:
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"pv.seti({spec!r}) takes an int, not {value!r}")
        if not -(2**31) <= value < 2**31:
            raise OverflowError(f"pv.seti({spec!r}, {value}): AVP integers are 32-bit")
        return self._set(spec, value)


class Hdr(_Api):
    prefix = "hdr."

    @_kemi
    def get(self, name: str) -> str | None:
        return self.ksr.header(name)

    @_kemi
    def gete(self, name: str) -> str:
        return self.ksr.header(name) or ""

    @_kemi
    def is_present(self, name: str) -> int:
        return 1 if self.ksr.header(name) is not None else -1

    @_kemi
    def insert(self, text: str) -> int:
        self.ksr.inserted_headers.append(_text(text))
        return 1

    @_kemi
    def append(self, text: str) -> int:
        """A header line (CRLF and all) added after the request's last header."""
        self.ksr.appended_headers.append(_text(text))
        return 1

    @_kemi
    def append_to_reply(self, text: str) -> int:
        """A header line (CRLF and all) for the reply the route sends next."""
        self.ksr.reply_headers.append(_text(text))
        return 1


class Tm(_Api):
    prefix = "tm."

    @_kemi
    def t_relay(self) -> int:
        """Runs the branch route (``t_on_branch``), then records what was sent."""
        self.ksr.record_route_params = None
        self.ksr.via_xavp, self.ksr.via_xavp_added = {}, False
        if self.ksr.on_branch is not None:
            self.ksr.routes[self.ksr.on_branch](None)
        self.ksr.relays.append(
            {
                "ruri": self.ksr.pvs.get("$ru"),
                "duri": self.ksr.pvs.get("$du"),
                "routes": list(self.ksr.inserted_headers),
                "fr_timers": self.ksr.fr_timers,
                "on_reply": self.ksr.on_reply,
                "on_failure": self.ksr.on_failure,
                "record_route_params": self.ksr.record_route_params,
                "via_params": dict(self.ksr.via_xavp) if self.ksr.via_xavp_added else {},
                "auto_inv_100": self.ksr.auto_inv_100,
                "replies_before": list(self.ksr.sl_replies),
            }
        )
        return 1

    @_kemi
    def t_set_auto_inv_100(self, on: int) -> int:
        self.ksr.auto_inv_100 = bool(on)
        return 1

    @_kemi
    def t_set_fr(self, fr_inv_ms: int, fr_ms: int) -> int:
        self.ksr.fr_timers = (fr_inv_ms, fr_ms)
        return 1

    @_kemi
    def t_on_reply(self, name: str) -> int:
        self.ksr.on_reply = name
        return 1

    @_kemi
    def t_on_failure(self, name: str) -> int:
        self.ksr.on_failure = name
        return 1

    @_kemi
    def t_on_branch(self, name: str) -> int:
        self.ksr.on_branch = name
        return 1

    @_kemi
    def t_check_trans(self) -> int:
        """-1: no transaction matched (set ``returns`` for a CANCEL of a known INVITE: 1, or
        an ACK tm absorbed: 0)."""
        return -1

    @_kemi
    def t_lookup_request(self) -> int:
        """-1: the request is no retransmission of a transaction (set ``returns``: 1)."""
        return -1

    @_kemi
    def t_branch_timeout(self) -> int:
        return 1 if self.ksr.branch_timed_out else -1

    @_kemi
    def t_branch_replied(self) -> int:
        return 1 if self.ksr.branch_replied else -1

    @_kemi
    def t_is_canceled(self) -> int:
        return 1 if self.ksr.canceled else -1

    @_kemi
    def t_reply(self, code: int, reason: str) -> int:
        self.ksr.t_replies.append((code, reason))
        return 1

    @_kemi
    def t_uac_send(
        self, method: str, ruri: str, nexthop: str, socket: str, headers: str, body: str
    ) -> int:
        self.ksr.uac_sent.append({"method": method, "ruri": ruri, "nexthop": nexthop})
        return 1


class Tmx(_Api):
    """Suspending a transaction and resuming it, as ``tmx`` and tm's ``t_suspend.c`` do: the
    transaction (its message's pseudo-variables, headers, AVPs) is kept; ``t_continue`` makes
    it current again and runs the named route (``FakeKsr.routes``) at once, with tm's
    branch of no destination as branch 0 (``BLIND_BRANCH`` in ``relays``)."""

    prefix = "tmx."

    @_kemi
    def t_suspend(self) -> int:
        ksr = self.ksr
        index, label = len(ksr.suspended) + 1, 1000 + len(ksr.suspended)
        ksr.pvs |= {"$T(id_index)": index, "$T(id_label)": label}
        ksr.suspended[(index, label)] = (
            dict(ksr.pvs),
            dict(ksr.headers),
            {key: list(stack) for key, stack in ksr.avps.items()},
            list(ksr.inserted_headers),
        )
        return 1

    @_kemi
    def t_continue(self, index: int, label: int, route: str) -> int:
        ksr = self.ksr
        kept = ksr.suspended.pop((index, label), None)
        if kept is None:
            return -1
        ksr._new_transaction()
        ksr.pvs, ksr.headers, ksr.avps, ksr.inserted_headers = kept
        ksr.relays.append(BLIND_BRANCH)
        ksr.routes[route](None, "tmx:continue")
        return 1


class Sl(_Api):
    prefix = "sl."

    @_kemi
    def sl_send_reply(self, code: int, reason: str) -> int:
        self.ksr.sl_replies.append((code, reason))
        return 1

    @_kemi
    def sl_reply_error(self) -> int:
        """sl answers the last internal error's code (a failed t_relay: mostly 500)."""
        self.ksr.sl_replies.append((500, "error"))
        return 1


class Rr(_Api):
    prefix = "rr."

    @_kemi
    def loose_route(self) -> int:
        """1 when the request has a Route header (routed by it), -1 without one. The first
        Route is the balancer's own; the next one, if any, becomes ``$du``."""
        routes = self.ksr.header("Route")
        if routes is None:
            return -1
        following = [part.strip().strip("<>").split(";")[0] for part in routes.split(",")][1:]
        if following:
            self.ksr.pvs["$du"] = following[0]
        return 1

    @_kemi
    def record_route(self) -> int:
        self.ksr.record_routed = True
        return 1

    @_kemi
    def record_route_params(self, params: str) -> int:
        self.ksr.record_routed = True
        self.ksr.record_route_params = _text(params)
        return 1


class Htable(_Api):
    """The tables of ``kamailio.cfg``; a table not declared there is an error in Kamailio,
    here a ``KeyError``."""

    prefix = "htable."

    def _table(self, name: str) -> dict[str, Value]:
        if name not in self.ksr.htables:
            raise KeyError(f"htable {name} is not declared in kamailio.cfg")
        return self.ksr.htables[name]

    @_kemi
    def sht_get(self, table: str, key: str) -> Value | None:
        return self._table(table).get(key)

    @_kemi
    def sht_sets(self, table: str, key: str, value: str) -> int:
        self._table(table)[key] = _text(value)
        return 1

    @_kemi
    def sht_seti(self, table: str, key: str, value: int) -> int:
        self._table(table)[key] = value
        return 1

    @_kemi
    def sht_setxi(self, table: str, key: str, value: int, expire_s: int) -> int:
        self._table(table)[key] = value
        self.ksr.expiries[(table, key)] = expire_s
        return 1

    @_kemi
    def sht_rm(self, table: str, key: str) -> int:
        self._table(table).pop(key, None)
        return 1

    @_kemi
    def sht_is_null(self, table: str, key: str) -> int:
        return -1 if key in self._table(table) else 1

    def _add(self, table: str, key: str, delta: int) -> int:
        values = self._table(table)
        if key not in values and self.ksr.initvals.get(table) is not None:
            values[key] = self.ksr.initvals[table]  # htable's initval: sht_inc creates the key
        if not isinstance(values.get(key), int):
            return HT_NO_INT_VALUE
        values[key] += delta
        return values[key]

    @_kemi
    def sht_inc(self, table: str, key: str) -> int:
        return self._add(table, key, +1)

    @_kemi
    def sht_dec(self, table: str, key: str) -> int:
        return self._add(table, key, -1)

    @_kemi
    def sht_iterator_start(self, iterator: str, table: str) -> int:
        self.ksr.iterators[iterator] = iter(list(self._table(table).items()))
        return 1

    @_kemi
    def sht_iterator_next(self, iterator: str) -> int:
        try:
            self.ksr.iterated[iterator] = next(self.ksr.iterators[iterator])
        except StopIteration:
            self.ksr.iterated.pop(iterator, None)
            return -1
        return 1

    @_kemi
    def sht_iterator_end(self, iterator: str) -> int:
        self.ksr.iterators.pop(iterator, None)
        self.ksr.iterated.pop(iterator, None)
        return 1


class Textops(_Api):
    prefix = "textops."

    @_kemi
    def remove_hf(self, name: str) -> int:
        """A removal is a lump: the message still reads the header, what leaves lacks it."""
        self.ksr.removed_headers.append(name)
        return 1 if self.ksr.header(name) is not None else -1


class Siputils(_Api):
    prefix = "siputils."

    @_kemi
    def has_totag(self) -> int:
        return 1 if self.ksr.pvs.get("$tt") else -1


class Maxfwd(_Api):
    prefix = "maxfwd."

    @_kemi
    def process_maxfwd(self, limit: int) -> int:
        """maxfwd.c: 2 when the header was added, 1 when decremented, -1 when it is 0."""
        hops = self.ksr.header("Max-Forwards")
        if hops is None:
            self.ksr.headers["Max-Forwards"] = str(limit)
            return 2
        if int(hops) <= 0:
            return -1
        self.ksr.headers["Max-Forwards"] = str(min(int(hops), limit) - 1)
        return 1


class Sanity(_Api):
    prefix = "sanity."

    @_kemi
    def sanity_check(self, checks: int, uri_checks: int) -> int:
        return 1


class Corex(_Api):
    prefix = "corex."

    @_kemi
    def has_ruri_user(self) -> int:
        return 1 if self.ksr.pvs.get("$rU") else -1

    @_kemi
    def via_add_xavp_params(self, flags: int) -> int:
        """The Via of what is sent next carries the fields of ``$xavp(via)``."""
        self.ksr.via_xavp_added = True
        return 1

    @_kemi
    def send_data(self, uri: str, data: str) -> int:
        self.ksr.sent_data.append((uri, data))
        return 1


class Uac(_Api):
    prefix = "uac."

    @_kemi
    def uac_req_send(self) -> int:
        self.ksr.uac_sent.append(dict(self.ksr.uac_req))
        return 1


class FakeKsr:
    """The state behind the fake ``KSR`` module (``module``), and the test's controls."""

    def __init__(self, cfg: Path = EMBED_CFG) -> None:
        self.returns: dict[str, Any] = {}
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.myself = {MYSELF}
        self.initvals = declared_htables(cfg)
        self.htables: dict[str, dict[str, Value]] = {name: {} for name in self.initvals}
        self.expiries: dict[tuple[str, str], int] = {}
        self.iterators: dict[str, Iterator[tuple[str, Value]]] = {}
        self.iterated: dict[str, tuple[str, Value]] = {}
        self.uac_req: dict[str, Value] = {}
        self.uac_sent: list[dict[str, Value]] = []
        self.logs: list[tuple[str, str]] = []
        self.suspended: dict[tuple[int, int], tuple[Any, ...]] = {}
        self.routes: dict[str, Callable[..., int]] = {}
        """The routes ``t_continue`` and ``t_relay`` (a branch route) may run, by name
        (``Node`` registers the app's)."""
        self._new_transaction()
        self.module = types.ModuleType("KSR", "Fake of Kamailio's KSR (tests/fakes/ksr.py)")
        core = Core(self)
        for name in dir(core):
            if getattr(getattr(core, name), "kemi", False):
                setattr(self.module, name, getattr(core, name))
        apis = (Pv, Hdr, Tm, Tmx, Sl, Rr, Htable, Textops, Siputils, Maxfwd, Sanity, Corex, Uac)
        for api in apis:
            setattr(self.module, api.prefix.rstrip("."), api(self))

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Make ``import KSR`` give this fake, also in edge modules imported before."""
        monkeypatch.setitem(sys.modules, "KSR", self.module)
        for name, module in list(sys.modules.items()):
            if name.startswith("counterpoise.") and hasattr(module, "KSR"):
                monkeypatch.setattr(module, "KSR", self.module)

    # --- playing Kamailio ----------------------------------------------------------------------

    def _new_transaction(self) -> None:
        self.pvs: dict[str, Value] = {}
        self.headers: dict[str, str] = {}
        self.avps: dict[str, list[Value]] = {}
        self.inserted_headers: list[str] = []
        self.appended_headers: list[str] = []
        self.reply_headers: list[str] = []
        self.relays: list[dict[str, Any]] = []
        self.forwards: list[str] = []
        """Where the request was forwarded statelessly (``forward_uri``), in order."""
        self.sl_replies: list[tuple[int, str]] = []
        self.t_replies: list[tuple[int, str]] = []
        self.record_routed = False
        self.record_route_params: str | None = None
        self.on_branch: str | None = None
        self.fr_timers: tuple[int, int] | None = None
        self.auto_inv_100 = True
        """tm's own 100 Trying to an INVITE (``auto_inv_100``, on in the turnkey config)."""
        self.on_reply: str | None = None
        self.on_failure: str | None = None
        self.branch_timed_out = False
        self.branch_replied = False
        self.canceled = False
        self.removed_headers: list[str] = []
        self.dropped = False
        self.request_source: tuple[str, int] = ("", 0)
        """Where the transaction's request came from: a failure route reads it (tm runs it on
        the request), whatever reply came last."""
        self.vias: list[dict[str, str]] = []
        """The message's Vias, top first, each as its selects read it (``transport``,
        ``host``, ``port``, ``branch``, ``received``, ``rport``, ``params.NAME``)."""
        self.via_xavp: dict[str, str] = {}
        self.via_xavp_added = False
        self.sent_data: list[tuple[str, str]] = []
        """What ``corex.send_data`` sent, as (URI, message)."""

    def request(
        self,
        method: str,
        ruri: str,
        *,
        to_tag: str = "",
        from_tag: str = "from-tag-1",
        to: str | None = None,
        headers: dict[str, str] | None = None,
        source: str = "198.51.100.7",
        source_port: int = 5060,
        proto: str = "udp",
        call_id: str = "call-1@198.51.100.7",
        via_branch: str = "z9hG4bK-caller-1",
    ) -> None:
        """A new request arrives: its pseudo-variables (the To URI is ``to``, else the R-URI),
        headers and Via (its source's, with ``via_branch``); a new transaction (no AVPs,
        nothing relayed or answered yet)."""
        self._new_transaction()
        self.pvs = {
            "$rm": method, "$ru": ruri, "$si": source, "$sp": source_port, "$pr": proto,
            "$ci": call_id,
            "$cs": "1",
            "$ft": from_tag, "$tt": to_tag,
            **_uri_parts(ruri, "$rU", "$rd"), **_uri_parts(to or ruri, "$tU", "$td"),
        }  # fmt: skip
        self.headers = dict(headers or {})
        self.request_source = (source, source_port)
        sent_by = {"host": source, "port": str(source_port)}
        self.vias = [{"transport": proto.upper(), **sent_by, "branch": via_branch}]

    def reply(
        self,
        status: int,
        *,
        branch: int = 0,
        headers: dict[str, str] | None = None,
        to_tag: str | None = None,
        source: tuple[str, int] | None = None,
    ) -> None:
        """A reply to the relayed request arrives on tm branch ``branch`` (the onreply route
        runs next): ``$rs``, ``$T_branch_idx``, the reply's headers and To-tag, and its source
        (``$si``, ``$sp``): the branch's destination unless ``source`` says otherwise; AVPs
        are kept."""
        self.pvs |= {"$rs": status, "$T_branch_idx": branch}
        if source is None and branch < len(self.relays) and self.relays[branch]["duri"]:
            source = _hop(self.relays[branch]["duri"])
        if source is not None:
            self.pvs["$si"], self.pvs["$sp"] = source
        self.dropped = False
        if to_tag is not None:
            self.pvs["$tt"] = to_tag
        self.headers = dict(headers or {})
        self.branch_replied = True

    def failure(
        self, status: int, *, timeout: bool = False, replied: bool = True, canceled: bool = False
    ) -> None:
        """The transaction's branch failed (the failure route runs next, on the request: its
        source again): tm's final ``$T_reply_code`` (its own 408 on a timeout), whether the
        branch timed out, whether it had any reply, whether the caller cancelled."""
        self.pvs["$T_reply_code"] = status
        self.pvs["$si"], self.pvs["$sp"] = self.request_source  # the failure route's message
        self.pvs.pop("$rs", None)
        self.pvs.pop("$T_branch_idx", None)
        self.branch_timed_out, self.branch_replied, self.canceled = timeout, replied, canceled

    def header(self, name: str) -> str | None:
        """A header of the message being handled (names are case-insensitive)."""
        for header, value in self.headers.items():
            if header.lower() == name.lower():
                return value
        return None

    def logged(self, level: str) -> list[str]:
        return [text for lvl, text in self.logs if lvl == level]

    def called(self, name: str) -> list[tuple[Any, ...]]:
        return [args for called, args in self.calls if called == name]


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"a KEMI str parameter, not {value!r}")
    return value


def _uri_parts(uri: str, user_pv: str, host_pv: str) -> dict[str, str]:
    match = _URI.match(uri)
    if match is None:
        return {user_pv: "", host_pv: ""}
    return {user_pv: match.group("user") or "", host_pv: match.group("host")}


def _hop(uri: str) -> tuple[str, int]:
    """Where a request to ``uri`` goes: its host and port (5060 by default)."""
    match = re.match(r"^sips?:(?:[^@;]+@)?(?P<host>[^:;>]+)(?::(?P<port>\d+))?", uri)
    if match is None:
        raise ValueError(f"not a SIP URI: {uri!r}")
    return match.group("host"), int(match.group("port") or 5060)
