"""Parsing what is read from Redis: every value may be a hand edit or a foreign writer's.

Redis is shared by every balancer node, agent and operator, so a record read from it is data
to check, never a trusted value. A parser of such a record runs under ``untrusted``: whatever
goes wrong becomes ``BadRecord`` with the reason, the caller leaves that one record out, and
nothing else stops.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

MAX_REASON_CHARS = 160
"""A reason is cut to this length: it is logged and stored in ``cp:rejects:<node>``, and a
hostile record must not make either large."""


class BadRecord(ValueError):
    """A record read from Redis that cannot be used; the message says why."""


def untrusted(parse: Callable[[], T]) -> T:
    """Run ``parse`` on data read from Redis; any failure becomes ``BadRecord``.

    Caught broadly on purpose: a hand-edited value can make ``json`` raise ``RecursionError``
    (deep nesting), ``int()`` raise ``OverflowError`` (``1e999``) or a decode raise
    ``UnicodeDecodeError``; whatever it is, it must cost this one record, never the caller's
    tick or request.
    """
    try:
        return parse()
    except BadRecord as error:
        raise type(error)(str(error)[:MAX_REASON_CHARS]) from None
    except Exception as error:
        raise BadRecord(f"{type(error).__name__}: {error}"[:MAX_REASON_CHARS]) from None
