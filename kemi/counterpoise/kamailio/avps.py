"""The AVPs a relayed request carries, behind one typed accessor: the only place that names
them.

tm keeps AVPs with the transaction, so the reply and failure routes see them in whichever
worker handles the reply. Attempt ``k`` (0-based) of a request is tm branch ``k`` (the
balancer never forks), or ``k + 1`` for a request that was held (tm gave the suspended
transaction a branch of no destination, branch 0), and its AVPs are suffixed with that
branch index ``i``:

``cpb``       1 when the request was held (``Attempt.nth``), else unset.

``cpu<i>``    proxy of attempt i (the proxies tried so far are those of the attempts from
              the first branch on); ``cpt<i>`` ``attempts.stamp()`` of its relay;
``cps<i>``    its relay on the script clock (``clock.script_ms``), for a reply route that
              times its provisional replies natively (``RouteNames.times_provisional``);
``cpq<i>``    ms to its 100 Trying (how long it waited in the proxy's queue);
``cpl<i>``    the ``X-CP-Load`` values of its provisional replies, ``LOAD_SEPARATOR``-joined,
              kept by a native reply route for the outcome to count (Python counts them
              as they come);
``cpf<i>``    ms to its first reply other than 100 Trying; ``cpd<i>`` set once its outcome
              has been counted: 2 when it timed out with no reply (a reply after that is
              late: the proxy is alive), 1 otherwise.
``cpprog``    ``progress_timeout_ms``, ``cpring`` ``fr_inv_timer_ms``: the timers a native
              reply route re-arms after a 100 Trying and after the first other 1xx; unset
              when the progress timeout is off (or the reply route is Python's).
``cpaor``     the AOR of a REGISTER, for the reply route (location server).
``cploc``     set on a request sent to its location holder (not a REGISTER).
``cpseal``    set on a dialog-forming request whose Record-Route the balancer seals, for the
              first attempt ``_arm`` arms when it was not told so (``cp_seal``, then
              ``cp_select``; a held request's release); a later attempt is sealed when the
              one before was (``cpsp``).
``cpsp``      the sealed form (``dialog_seal.Hop.sealed``) of the proxy its latest attempt
              goes to: the config's ``CP_SEAL`` route seals the branch with it.
"""

from __future__ import annotations

import KSR

# Between the values of cpl<i>: route[CP_PROVISIONAL] joins them with it, the timer splits
# a queued reply's so too (core.queued_reply).
from counterpoise.core.queued_reply import LOAD_SEPARATOR as LOAD_SEPARATOR
from counterpoise.kamailio import read

FIRST_BRANCH = "$avp(cpb)"
AOR = "$avp(cpaor)"
HELD = "$avp(cploc)"
SEALED = "$avp(cpseal)"
SEAL_PROXY = "$avp(cpsp)"
PROGRESS_MS = "$avp(cpprog)"
RINGING_MS = "$avp(cpring)"
RESUMED_BRANCH = 1
"""tm's branch of the first attempt of a request that was held (``cpb``)."""
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
    def nth(cls, attempt: int, first_branch: int | None = None) -> Attempt:
        """Attempt ``attempt`` (0-based) of the request being handled; ``first_branch``, tm's
        branch of its first attempt, when the caller knows it (else read: ``cpb``)."""
        if first_branch is None:
            first_branch = read.number(FIRST_BRANCH) or 0
        return cls(attempt + first_branch)

    @classmethod
    def of_reply(cls) -> Attempt | None:
        """The attempt whose reply is being handled (tm's branch index), if any."""
        index = read.number("$T_branch_idx")
        return None if index is None else cls(index)

    def start(self, proxy: str, sent_stamp: int, script_ms: int | None = None) -> None:
        """Record the attempt's relay: to ``proxy`` at ``sent_stamp``; ``script_ms``, that
        time on the script clock, for a reply route that times it natively (None: none)."""
        KSR.pv.sets(f"$avp(cpu{self.index})", proxy)
        self._values["cpu"] = proxy
        self._seti("cpt", sent_stamp)
        if script_ms is not None:
            self._seti("cps", script_ms)

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
    def load_headers(self) -> list[str]:
        """The ``X-CP-Load`` values of its provisional replies a native route kept."""
        found = self._get("cpl")
        return found.split(LOAD_SEPARATOR) if isinstance(found, str) else []

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
    """The proxies the request's attempts went to, in order (``cpu<i>`` from its first branch
    on): read where a request fails, so that arming one writes no list of them."""
    first = read.number(FIRST_BRANCH) or 0
    proxies: list[str] = []
    while isinstance(proxy := read.value(f"$avp(cpu{first + len(proxies)})"), str):
        proxies.append(proxy)
    return proxies


def set_progress_timers(progress_ms: int, ringing_ms: int) -> None:
    """The timers a native reply route re-arms on the provisional replies (``cpprog``,
    ``cpring``)."""
    KSR.pv.seti(PROGRESS_MS, progress_ms)
    KSR.pv.seti(RINGING_MS, ringing_ms)


def aor() -> str:
    return read.text(AOR) or ""


def set_resumed() -> None:
    """The request being handled was held: tm's branch 0 is the suspended transaction's."""
    KSR.pv.seti(FIRST_BRANCH, RESUMED_BRANCH)


def set_aor(name: str) -> None:
    KSR.pv.sets(AOR, name)


def held() -> bool:
    return not KSR.pv.is_null(HELD)


def set_held() -> None:
    KSR.pv.seti(HELD, 1)


def sealed(first: bool) -> bool:
    """Whether the request's attempts are sealed: for its ``first`` attempt, ``seal``'s
    mark; for a later one, whether the one before was (``cpsp`` set, even empty)."""
    return not KSR.pv.is_null(SEALED if first else SEAL_PROXY)


def set_sealed() -> None:
    KSR.pv.seti(SEALED, 1)


def set_seal_proxy(sealed: str) -> None:
    KSR.pv.sets(SEAL_PROXY, sealed)
