"""Counterpoise inside an operator's own Kamailio config, native or KEMI Python: the routes
``embed/counterpoise.cfg`` arms and calls, as methods of one object (docs/embedding.md).

A native config gets an ``Embedded`` from ``counterpoise_native.py`` (app_python3's
``mod_init``) and calls its ``cp_*`` methods with ``python_exec``; its tm routes are the
include's route blocks (``onreply_route[CP_REPLY]``...). A KEMI Python config's class
inherits ``Embedded``: the routes armed are then these methods themselves. Either way each
method is one ``Balancer`` operation, and returns what it does (1 true, -1 false, 0 stop).
"""

from __future__ import annotations

import KSR

from counterpoise.core.settings import Settings, load_settings
from counterpoise.kamailio.app import FALSE, TRUE, Balancer, RouteNames
from counterpoise.kamailio.guard import hook

NATIVE_ROUTES = RouteNames(
    "CP_REPLY",
    "CP_FAILURE",
    "CP_RELEASE",
    "CP_BRANCH",
    times_provisional=True,
    in_dialog_judged=True,
)
"""The route blocks of ``embed/counterpoise.cfg``."""
KEMI_ROUTES = RouteNames("cp_on_reply", "cp_failure", "cp_release_route", "cp_on_branch")
"""``Embedded``'s own methods, in a KEMI config whose class inherits it."""


class Embedded:
    """The Counterpoise routes of a Kamailio config; ``counterpoise`` is its ``Balancer``.

    In a KEMI Python config: inherit it, call ``Embedded.__init__(self)`` in your class's
    ``__init__`` (``mod_init``: a settings error stops Kamailio's start) and
    ``self.counterpoise.child_init(rank)`` in its ``child_init``."""

    def __init__(self, settings: Settings | None = None, native: bool = False) -> None:
        settings = load_settings() if settings is None else settings
        self.counterpoise = Balancer(settings, NATIVE_ROUTES if native else KEMI_ROUTES)

    def child_init(self, rank: int) -> int:
        return self.counterpoise.child_init(rank)

    # --- called from the operator's routes -------------------------------------------------

    def cp_select(self, msg: object) -> int:
        """``Balancer.select``: ``$du`` set and the routes armed (1), no proxy (-1), or the
        request answered or held here (0)."""
        return self.counterpoise.select()

    def cp_seal_select(self, msg: object) -> int:
        """``cp_seal`` then ``cp_select`` in one call, for a dialog-forming request
        (``Balancer.seal_and_select``): 0 when either answered the request."""
        return self.counterpoise.seal_and_select()

    def cp_relay_failed(self, msg: object) -> int:
        return self.counterpoise.relay_failed()

    def cp_seal(self, msg: object) -> int:
        return self.counterpoise.seal()

    def cp_in_dialog(self, msg: object) -> int:
        return self.counterpoise.in_dialog()

    def cp_forward_orphan(self, msg: object) -> int:
        return self.counterpoise.forward_orphan()

    def cp_on_core_reply(self, msg: object) -> int:
        """A KEMI config's core reply route (a native one calls ``route(CP_CORE_REPLY)``)."""
        return self.counterpoise.on_core_reply()

    @hook("stray_reply", fallback=FALSE)  # unproven: dropped
    def cp_stray_reply(self, msg: object) -> int:
        """``route(CP_CORE_REPLY)``'s question on a reply matching no transaction: forward
        it (1) or drop it (-1)."""
        return self.counterpoise.stray_reply()

    # --- the routes it arms, its timers and its probes --------------------------------------

    def cp_on_reply(self, msg: object) -> int:
        """``Balancer.on_reply``: -1 for a reply to drop, which ``CP_PROVISIONAL`` drops."""
        return self.counterpoise.on_reply()

    def cp_on_branch(self, msg: object) -> int:
        return self.counterpoise.on_branch()

    def cp_failure(self, msg: object) -> int:
        """The failure route: the next proxy within the retry budget, relayed; else tm
        answers the caller with the failure."""
        if self.counterpoise.failover() == TRUE:
            self.counterpoise.relay()
        return TRUE

    def cp_release_route(self, msg: object, evname: str = "") -> int:
        return self.counterpoise.release_route()

    def cp_release_tick(self, msg: object, evname: str = "") -> int:
        return self.counterpoise.release_tick()

    @hook("release", fallback=FALSE)  # true would loop the native tick on the error
    def cp_release_next(self, msg: object) -> int:
        """A native config's release tick: the next held request to resume now, in
        ``$var(cp_index)`` and ``$var(cp_label)`` for its ``t_continue`` (1), or none (-1)."""
        held = self.counterpoise.next_release()
        if held is None:
            return FALSE
        KSR.pv.seti("$var(cp_index)", held.index)
        KSR.pv.seti("$var(cp_label)", held.label)
        return TRUE

    def cp_sync_tick(self, msg: object, evname: str = "") -> int:
        return self.counterpoise.sync_tick()

    def cp_uac_reply(self, msg: object, evname: str = "") -> int:
        return self.counterpoise.on_uac_reply()
