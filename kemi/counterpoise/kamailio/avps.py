"""The AVPs a relayed request carries, behind one typed accessor: the only place that names
them.

tm keeps AVPs with the transaction, so the reply and failure routes see them in whichever
worker handles the reply. Attempt ``k`` (0-based) of a request is tm branch ``k`` (the
balancer never forks), or ``k + 1`` for a request that was held (tm gave the suspended
transaction a branch of no destination, branch 0), and its AVPs are suffixed with that
branch index ``i``:

``cpb``       1 when the request was held (``Attempt.nth``), else unset.

``cp_tried``  the proxies tried so far, in order, comma-separated.
``cpu<i>``    proxy of attempt i; ``cpt<i>`` ``attempts.stamp()`` of its relay;
``cpq<i>``    ms to its 100 Trying (how long it waited in the proxy's queue);
``cpf<i>``    ms to its first reply other than 100 Trying; ``cpd<i>`` set once its outcome
              has been counted: 2 when it timed out with no reply (a reply after that is
              late: the proxy is alive), 1 otherwise.
``cpaor``     the AOR of a REGISTER, for the reply route (location server).
``cploc``     set on a request sent to its location holder (not a REGISTER).
``cpseal``    set on a dialog-forming request whose Record-Route the balancer seals.
``cpsp``      the sealed form (``dialog_seal.Hop.sealed``) of the proxy its latest attempt
              goes to: the config's ``CP_SEAL`` route seals the branch with it.
"""

from __future__ import annotations

import KSR

from counterpoise.kamailio import read

TRIED = "$avp(cp_tried)"
FIRST_BRANCH = "$avp(cpb)"
AOR = "$avp(cpaor)"
HELD = "$avp(cploc)"
SEALED = "$avp(cpseal)"
SEAL_PROXY = "$avp(cpsp)"
TIMED_OUT = 2
"""``cpd<i>`` of an attempt counted as a silent timeout."""


class Attempt:
    """The AVPs of attempt ``index`` of the transaction being handled. Each is read once per
    ``Attempt`` (one hook's look at the transaction), then from the copy it keeps, which its
    own writes update: a reply's several questions about one AVP cost one KSR call."""

    def __init__(self, index: int) -> None:
        self.index = index
        self._values: dict[str, object] = {}

    def _get(self, name: str) -> object:
        if name not in self._values:
            self._values[name] = read.value(f"$avp({name}{self.index})")
        return self._values[name]

    def _number(self, name: str) -> int | None:
        found = self._get(name)
        return found if isinstance(found, int) else None

    def _seti(self, name: str, value: int) -> None:
        KSR.pv.seti(f"$avp({name}{self.index})", value)
        self._values[name] = value

    @classmethod
    def nth(cls, attempt: int) -> Attempt:
        """Attempt ``attempt`` (0-based) of the request being handled."""
        return cls(attempt + (read.number(FIRST_BRANCH) or 0))

    @classmethod
    def of_reply(cls) -> Attempt | None:
        """The attempt whose reply is being handled (tm's branch index), if any."""
        index = read.number("$T_branch_idx")
        return None if index is None else cls(index)

    def start(self, proxy: str, sent_stamp: int) -> None:
        KSR.pv.sets(f"$avp(cpu{self.index})", proxy)
        self._values["cpu"] = proxy
        self._seti("cpt", sent_stamp)

    @property
    def proxy(self) -> str | None:
        found = self._get("cpu")
        return found if isinstance(found, str) else None

    @property
    def sent_stamp(self) -> int | None:
        return self._number("cpt")

    @property
    def first_reply_ms(self) -> int | None:
        return self._number("cpf")

    @property
    def trying_ms(self) -> int | None:
        return self._number("cpq")

    def set_trying_ms(self, elapsed_ms: int) -> None:
        self._seti("cpq", elapsed_ms)

    def set_first_reply_ms(self, elapsed_ms: int) -> None:
        self._seti("cpf", elapsed_ms)

    @property
    def counted(self) -> bool:
        return self._get("cpd") is not None

    def mark_counted(self, timed_out: bool = False) -> None:
        self._seti("cpd", TIMED_OUT if timed_out else 1)

    @property
    def timed_out(self) -> bool:
        """Counted as a timeout with no reply: any reply now is a late one."""
        return self._number("cpd") == TIMED_OUT


def tried() -> list[str]:
    text = read.text(TRIED)
    return text.split(",") if text else []


def set_tried(proxies: list[str]) -> None:
    KSR.pv.sets(TRIED, ",".join(proxies))


def aor() -> str:
    return read.text(AOR) or ""


def set_resumed() -> None:
    """The request being handled was held: tm's branch 0 is the suspended transaction's."""
    KSR.pv.seti(FIRST_BRANCH, 1)


def set_aor(name: str) -> None:
    KSR.pv.sets(AOR, name)


def held() -> bool:
    return not KSR.pv.is_null(HELD)


def set_held() -> None:
    KSR.pv.seti(HELD, 1)


def sealed() -> bool:
    return not KSR.pv.is_null(SEALED)


def set_sealed() -> None:
    KSR.pv.seti(SEALED, 1)


def set_seal_proxy(sealed: str) -> None:
    KSR.pv.sets(SEAL_PROXY, sealed)
