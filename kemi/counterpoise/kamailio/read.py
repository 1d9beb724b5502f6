"""The one way to read a value of the message being handled.

app_python3 decodes every string it hands over strictly as UTF-8: reading a header, a tag or
a Call-ID that holds a byte such as 0xFF raises ``UnicodeDecodeError``. Every read goes
through here instead: such a value reads as None (absent) and is counted (``not_utf8`` in
``cpedge``), so hostile bytes cost a counter, never a route.
"""

from __future__ import annotations

import KSR

from counterpoise.kamailio.counters import EDGE


def value(spec: str) -> object:
    """A pseudo-variable (``$ci``, ``$hdr(X-CP-Load)``, ``$avp(...)``) or None."""
    try:
        return KSR.pv.get(spec)
    except UnicodeDecodeError:
        EDGE.count("not_utf8")
        return None


def header(name: str) -> str | None:
    """The value of header ``name``: None when the message has none, "" when its value is
    not UTF-8 (one read tells both)."""
    try:
        found = KSR.pv.get(f"$hdr({name})")
    except UnicodeDecodeError:
        EDGE.count("not_utf8")
        return ""
    return found if isinstance(found, str) else None


def text(spec: str) -> str | None:
    found = value(spec)
    return found if isinstance(found, str) else None


def number(spec: str) -> int | None:
    found = value(spec)
    return found if isinstance(found, int) else None


DialogIds = tuple[str | None, str | None, str | None]
"""A message's Call-ID, From tag and To tag."""


def dialog_ids() -> DialogIds:
    """``$ci``, ``$ft``, ``$tt``: read once for an in-dialog request's seal check and its
    dialog record."""
    return text("$ci"), text("$ft"), text("$tt")
