"""The config actions each message of a call runs: the per-message bench's third run
(``bench/per_message.py``), counted by Kamailio's own interpreter.

The Python columns of the per-message table see only what enters Python; the config's native
routes (the edge checks, the dialog seal, the reply routes that time and count) run in
Kamailio's interpreter, action by action, and cost as much CPU a call as the Python does. The
debugger module's ``cfgtrace`` logs every action the interpreter runs, with the route it runs
in. A copy of ``kamailio.cfg`` loads it and prefixes each log line with the message being
handled (its type, status and method), so each action is filed under "INVITE", "100 INVITE",
"ACK"... as the other columns are. An action is one statement or one test of an ``if`` or
``while``: a ``$_s()`` with five parts counts as one, like a ``$var`` assignment, so the count
says how much interpreting a message takes, not its cost exactly.

The debugger module ships in the ``kamailio`` package; tracing costs far more than the actions
themselves, so the run is short and slow (``RATE``), and it is not timed.
"""

from __future__ import annotations

import collections
import dataclasses
import re
from collections.abc import Iterable
from pathlib import Path

from counterpoise import processes

RATE = 10
"""Calls/s of the traced run: every action writes a log line."""
SECONDS = 3.0
WARMUP_S = 1.0
"""Calls before the counted ones: the first of each worker's messages."""
LOAD_AFTER = 'loadmodule "jsonrpcs.so"'
"""The line of ``kamailio.cfg`` the debugger module is loaded after."""
DEBUGGER = (
    'loadmodule "debugger.so"',
    'modparam("debugger", "cfgtrace", 1)',
    # L_NOTICE: logged under kamailio.cfg's debug=2.
    'modparam("debugger", "log_level", 1)',
)
PREFIX_SETTING = "log_prefix="
TRACE_PREFIX = 'log_prefix="{cp-trace $mt $rs $rm} "'
"""Each line names its message: type (1 request, 2 reply), status (``<null>`` for a request)
and method (a reply's is its CSeq's)."""
_ACTION = re.compile(
    r"\{cp-trace (?P<type>\d) (?P<status>\S+) (?P<method>\S+)\} .*cfgtrace.*?"
    r" (?P<kind>\w+)=\[(?P<route>[^\]]*)\] c=\["
)


@dataclasses.dataclass
class Actions:
    """Actions counted, per message kind and per route (``"<name> (<route type>)"``)."""

    by_message: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    by_route: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)


def tracing_tree(tree: Path) -> Path:
    """A source tree for ``start_counterpoise``: the repository's ``embed/`` and ``kemi/``,
    and a copy of its ``kamailio.cfg`` that traces every action, its lines prefixed with
    their message. ``ValueError`` when the config no longer has the lines the copy edits."""
    lines = (processes.REPO / "kamailio.cfg").read_text().splitlines()
    prefixes = [i for i, line in enumerate(lines) if line.startswith(PREFIX_SETTING)]
    if LOAD_AFTER not in lines or len(prefixes) != 1:
        raise ValueError(f"kamailio.cfg has no {LOAD_AFTER!r} line or no single {PREFIX_SETTING}")
    lines[prefixes[0]] = TRACE_PREFIX
    at = lines.index(LOAD_AFTER) + 1
    lines[at:at] = DEBUGGER
    tree.mkdir(parents=True, exist_ok=True)
    (tree / "kamailio.cfg").write_text("\n".join(lines) + "\n")
    for name in ("embed", "kemi"):
        (tree / name).symlink_to(processes.REPO / name)
    return tree


def count(log_lines: Iterable[str], kinds: Iterable[str]) -> Actions:
    """The actions of the messages of ``kinds`` ("INVITE", "100 INVITE"...) in a traced log;
    the rest (a probe's reply, a timer's route) is left out."""
    wanted = frozenset(kinds)
    actions = Actions()
    for line in log_lines:
        match = _ACTION.search(line)
        if match is None:
            continue
        method = match["method"]
        kind = method if match["type"] == "1" else f"{match['status']} {method}"
        if kind in wanted:
            actions.by_message[kind] += 1
            actions.by_route[f"{match['route']} ({match['kind']})"] += 1
    return actions
