"""No exception leaves a route: every ``Balancer`` operation a config calls runs behind
``hook``.

An exception that escaped into app_python3 would log a traceback per packet (hostile traffic
would fill the log) and return an error to Kamailio mid-route. Instead it is counted
(``error_<what>`` in ``cpedge``) and logged once per kind of hook and kind of error in each
process; the hook then returns 1 like any other. What must happen whatever the hook did (an
attempt's in-flight count coming down) is in the hooks' own ``finally`` blocks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import KSR

from counterpoise.kamailio.counters import EDGE

Hook = TypeVar("Hook", bound=Callable[..., int])

_logged: set[tuple[str, str]] = set()


def hook(kind: str, fallback: int = 1) -> Callable[[Hook], Hook]:
    """Guard a route or an operation: on an exception it returns ``fallback`` (an operation's
    "no": ``-1``, where going on as if it had succeeded would be wrong)."""

    def wrap(method: Hook) -> Hook:
        @functools.wraps(method)
        def guarded(*args: object, **kwargs: object) -> int:
            try:
                return method(*args, **kwargs)
            except Exception as error:
                failed(kind, error)
                return fallback

        return guarded  # type: ignore[return-value]

    return wrap


def isolated(what: str, action: Callable[[], object]) -> None:
    """Run one step of a hook (``what``: "sync tick"...) so that its failure, counted and
    logged by ``failed``, does not stop the steps after it."""
    try:
        action()
    except Exception as error:  # caught broadly: any failure is this step's alone
        failed(what, error)


def failed(what: str, error: Exception) -> None:
    """Count an unexpected failure of ``what`` (a hook, or one step of one: "sync tick") and
    log it once per process and kind of error: it would repeat every tick or request."""
    counter = "error_" + what.replace(" ", "_")
    EDGE.count(counter)
    key = (what, type(error).__name__)
    if key not in _logged:
        _logged.add(key)
        KSR.err(
            f"counterpoise: {what} failed, carrying on: {type(error).__name__}: {error!r:.200}"
            f" (logged once per process and kind; counted as {counter} in {EDGE.table.name})\n"
        )
