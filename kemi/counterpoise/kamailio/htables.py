"""Every hash table (htable) of a node's shared memory: its name, its size, the shape of its
keys and values, and the code that writes and reads it.

A node's Kamailio processes share nothing else: the SIP workers, the timer process that runs
the sync loop, and the release timer of held requests. ``kamailio.cfg`` creates the tables
with ``modparam("htable", "htable", ...)`` lines equal to ``Htable.definition``
(``tests/unit/test_htables.py`` keeps the two in step); every module touching a table takes
its name, and its fixed keys, from here. Writers and readers are named by their path under
``counterpoise``, or, for a route block of the native configs (``kamailio.cfg`` and the
includes ``embed/counterpoise.cfg``, ``embed/counterpoise-dialog.cfg``), by ``cfg:`` and its
name; the same test checks that the modules and routes they name are those that use it.

This module imports nothing of Kamailio, so the CLI, which writes the runtime settings over
JSON-RPC, uses it too.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Htable:
    name: str
    size: int
    """It has ``2 ** size`` slots: about the keys it holds at once (more make a lookup walk a
    longer chain)."""
    key: str
    """The shape of its keys."""
    value: str
    """What a key holds."""
    writers: tuple[str, ...]
    """The code that writes it: paths under ``counterpoise``, of a module or of a class,
    function or name in one; ``cfg:<route>``, a route block of the native configs
    (``cfg:request_route`` for the main one)."""
    readers: tuple[str, ...]
    autoexpire_s: int = 0
    """Each entry is dropped this long after its latest write; 0: never."""
    initval: int | None = None
    """What ``sht_inc`` starts a missing key from; None: it does not create the key."""
    operators: str = ""
    """What an operator reads of it with ``kamcmd``."""

    def definition(self) -> str:
        """The table as ``kamailio.cfg``'s ``modparam("htable", "htable", ...)`` gives it."""
        text = f"{self.name}=>size={self.size};"
        if self.autoexpire_s:
            text += f"autoexpire={self.autoexpire_s};"
        if self.initval is not None:
            text += f"initval={self.initval};"
        return text


def _fixed(*keys: str) -> str:
    return "the fixed keys " + ", ".join(f"``{key}``" for key in keys)


# --- routing ---------------------------------------------------------------------------------

ROUTING_TABLE = "table"
ROUTING_VERSION = "version"
RUNTIME_SETTINGS = "settings"
RUNTIME_SETTINGS_VERSION = "settings_version"
NODE_SHED_PERCENT = "node_shed"
IN_DIALOG_FR_TIMER_MS = "in_dialog_fr_timer_ms"
DIALOG_EVENT_SEQ = "dialog_event_seq"
DIALOG_EVENT_READ = "dialog_event_read"
DIALOG_EVENTS_MAX = "dialog_events_max"
DIALOG_EVENT_MAX_CHARS = "dialog_event_max_chars"
DIALOG_RECORDS = "dialog_records"
REPLY_EVENT_MAX_CHARS = "reply_event_max_chars"
ROUTING = Htable(
    name="cp",
    size=2,
    key=_fixed(
        ROUTING_TABLE,
        ROUTING_VERSION,
        RUNTIME_SETTINGS,
        RUNTIME_SETTINGS_VERSION,
        NODE_SHED_PERCENT,
        IN_DIALOG_FR_TIMER_MS,
        DIALOG_EVENT_SEQ,
        DIALOG_EVENT_READ,
        DIALOG_EVENTS_MAX,
        DIALOG_EVENT_MAX_CHARS,
        DIALOG_RECORDS,
        REPLY_EVENT_MAX_CHARS,
    ),
    value=(
        "the routing table (``core.routing_table``); the version of everything the timer "
        "process publishes (the table, the shed share, the dialog keys, the runtime "
        "settings), bumped on each change of any; the runtime settings changed since "
        "start-up (JSON object, name -> text) and their version, bumped on each push; the "
        "share (%) of new initial requests the node sheds for its own overload "
        "(``core.admission``); for the config's in-dialog route "
        "(``embed/counterpoise-dialog.cfg``), the ``in_dialog_fr_timer_ms`` setting and "
        "the bounds and slot numbers of its queue of dialog events (``DIALOG_EVENTS``); for "
        "it and the reply route ``CP_FINAL``, 1 when the location server records dialogs "
        "(its ACKs and BYEs are queued only then); for ``CP_FINAL``, the bound of a queued "
        "reply's line "
        "(``core.queued_reply.max_chars``)"
    ),
    writers=(
        "kamailio.shared.SharedTable.publish_table",
        "kamailio.shared.bump_version",
        "cli.reload.Reloader.reload_if_requested",
        "kamailio.node_load.NodeLoad.tick",
        "kamailio.native_dialog.NativeDialogTable",
        "kamailio.dialog_events.DialogEvents.drain",
        "cfg:CP_QUEUE_EVENT",
    ),
    readers=(
        "kamailio.shared.WorkerView.refresh",
        "kamailio.shared.bump_version",
        "kamailio.shared.SettingsFeed.changes",
        "cfg:CP_IN_DIALOG",
        "cfg:CP_DIALOG_EVENT",
        "cfg:CP_QUEUE_EVENT",
        "cfg:CP_FINAL",
    ),
)
"""The sync loop publishes the table every SIP worker routes with; ``counterpoise up`` pushes
the settings on SIGHUP, over JSON-RPC (``htable.sets``/``seti``), value before version, so a
process that sees the new version reads the new value. The timer process follows that
version each tick and bumps the published one, so a worker reads one version per request
and the settings only after a push (they reach it within a sync tick)."""

INFLIGHT = Htable(
    name="cpinf",
    size=8,
    initval=0,
    key='``"<proxy uri> <epoch>"`` (``attempts.epoch`` of the attempt\'s send stamp)',
    value="int: requests in flight to that proxy from this node, relayed in that epoch",
    writers=(
        "kamailio.shared.inflight_add",
        "kamailio.shared.relayed",
        "kamailio.shared.SharedTable.drop_stale_inflight",
        "cfg:CP_FINAL",
    ),
    readers=("kamailio.shared.inflight",),
)
"""Counted in and out with ``sht_inc``/``sht_dec`` (atomic across workers; ``initval`` lets
the first create the key; the native include's reply route counts a 2xx's attempt out with
``$shtdec``); the sync loop drops the counts of past epochs as drift."""

AWAITING = Htable(
    name="cpwait",
    size=8,
    initval=0,
    key=INFLIGHT.key,
    value=(
        "int: requests relayed in that epoch that the proxy has not answered yet but for its "
        "100 Trying (in its queue or its workers' hands): what holding limits (``core.hold``)"
    ),
    writers=(
        "kamailio.shared.awaiting_add",
        "kamailio.shared.relayed",
        "kamailio.shared.SharedTable.drop_stale_inflight",
        "cfg:CP_PROVISIONAL",
        "cfg:CP_FINAL",
    ),
    readers=("kamailio.shared.awaiting",),
)
"""A ringing call has left it: its ringing time is the callee's (the native include's reply
route counts it out with ``$shtdec``, on the same key)."""

# --- feedback from the SIP workers to the sync loop ------------------------------------------

TALLIES = Htable(
    name="cptally",
    size=8,
    key='``"<pid> <proxy uri>"``',
    value="that worker's cumulative ``core.tally.Tally`` of that proxy (``Tally.encode``)",
    writers=("kamailio.shared.WorkerView",),
    readers=("kamailio.shared.SharedTable.read_tallies",),
)
"""Each key has a single writer, so no lock is taken. The timer process has keys of its own
too: the outcomes of the replies the native reply route queued (``kamailio.dialog_events.
QueuedReplies``)."""

LOCATION_REJECT = "location record"
"""The key of the latest rejected location record (never a proxy URI: it has a space)."""
REJECTIONS = Htable(
    name="cpload",
    size=8,
    key=f"proxy URI; ``{LOCATION_REJECT}``",
    value=(
        "the latest reason an ``X-CP-Load`` of that proxy's replies was rejected; the latest "
        'location record a worker rejected, ``"<key>: <why>"``'
    ),
    writers=(
        "kamailio.shared.WorkerView.note_load_headers",
        "kamailio.location.LocationRouting",
    ),
    readers=(
        "kamailio.shared.SharedTable.read_load_rejections",
        "kamailio.shared.SharedTable.read_location_rejections",
    ),
)
"""Only the reasons: the counts are in the workers' tallies (``X-CP-Load``) and in
``LOCATION_COUNTERS`` (``REJECTED_RECORDS``)."""

HEARD = Htable(
    name="cpheard",
    size=8,
    key='``"<pid> <proxy uri>"``',
    value=(
        "int: when that worker last got, from that proxy, a reply that is not a failure, late "
        "replies included: its signs of life (``policy``); in Python ``attempts.stamp()``, in "
        "the native include's core reply route the script clock (``clock.script_ms``)"
    ),
    writers=("kamailio.shared.WorkerView.note_heard", "cfg:CP_HEARD"),
    readers=("kamailio.shared.SharedTable.read_heard", "cfg:CP_HEARD"),
)
"""Written at most every ``shared.HEARD_EVERY_MS`` per key. Its reader only asks whether a
key's value changed since its last look, so the two writers' clocks never meet: a worker
runs one form of the core reply route."""

PROXY_BY_ADDRESS = Htable(
    name="cpproxy",
    size=4,
    key='``"<address> <port>"`` (``edge.pool_hops``: an IP, lower case, no brackets)',
    value="the URI of the pool proxy seen at that address (the routing table's)",
    writers=("kamailio.pool_addresses.PoolAddresses",),
    readers=("kamailio.app.Balancer", "cfg:CP_HEARD", "cfg:CP_ATTEMPT"),
)
"""Rewritten by the timer process when the pool's proxies change: a native route finds the
proxy a reply came from with one lookup of ``$si $sp``, as ``edge.from_pool`` does over UDP
(a reply over a connection comes from an ephemeral port: Python judges it)."""

PROBES = Htable(
    name="cpprobe",
    size=4,
    key="proxy URI",
    value="send time (``clock.monotonic_ms``) of its latest answered probe",
    writers=("kamailio.shared.WorkerView.note_probe_answered",),
    readers=("kamailio.shared.WorkerView.probe_answered_ms",),
)
"""A probe left unanswered is no failure when one sent after it was answered
(``policy.health.probe_timeout_counts``)."""

RETRY_TOKENS = "tokens"
RETRIES_SPENT = "spent"
RETRIES_REFUSED = "refused"
RETRY_BUDGET = Htable(
    name="cpretry",
    size=2,
    key=_fixed(RETRY_TOKENS, RETRIES_SPENT, RETRIES_REFUSED),
    value=(
        "int: retries the workers may spend until the sync loop's next tick, which rewrites "
        "it; retries spent and refused since the node started"
    ),
    writers=("kamailio.shared.take_retry_token", "kamailio.shared.SharedTable.set_retry_tokens"),
    readers=("kamailio.shared.take_retry_token", "kamailio.shared.SharedTable.retry_counts"),
)
"""The node's retry budget (``attempts.RetryBudget``); the workers count with ``sht_inc`` and
``sht_dec``, atomic."""

# --- held requests ---------------------------------------------------------------------------

HELD_HEAD = "head"
HELD_TAIL = "tail"
HELD = Htable(
    name="cphold",
    size=8,
    initval=0,
    key=f"{_fixed(HELD_TAIL, HELD_HEAD)}; ``<seq>``",
    value=(
        "int: the sequence number of the latest request held (``sht_inc``: atomic across the "
        "workers that hold requests); int: the sequence number of the latest one released "
        '(the release timer alone writes it); ``"<tindex> <tlabel> <held at, monotonic ms>"`` '
        "of a request still held"
    ),
    writers=("kamailio.holding.hold", "kamailio.holding.Waiting", "kamailio.holding.take"),
    readers=("kamailio.holding.count", "kamailio.holding.Waiting", "cfg:CP_RELEASE_TICK"),
)
"""The node's queue of requests held while every proxy is queueing (``kamailio.holding``);
``initval`` lets ``sht_inc`` create the tail."""

# --- the location server ---------------------------------------------------------------------

REJECTED_RECORDS = "rejected_records"
"""The workers' counter of rejected location records."""
LOCATION_COUNTERS = Htable(
    name="cploc",
    size=6,
    key='``"<pid>"``',
    value=(
        f'that worker\'s counts, ``"name=count ..."`` (``kamailio.counters``), '
        f"``{REJECTED_RECORDS}`` among the names"
    ),
    writers=("kamailio.location.LocationRouting",),
    readers=("kamailio.shared.SharedTable.read_location_rejections", "kamailio.metrics.Endpoint"),
    operators="``htable.dump cploc``: every worker's count",
)
"""The location server's counters; ``core.location.sum_counters`` sums them over the
workers."""

DIALOGS = Htable(
    name="cpdlg",
    size=10,
    autoexpire_s=60,
    key="Call-ID",
    value="the dialog's record, this node's copy (``core.location.Record.to_local``, or"
    " ``core.location.NATIVE_LOCAL`` as the native reply route writes it); its ``source`` is"
    " empty until the ACK confirms the dialog",
    writers=("kamailio.location.LocationRouting", "cfg:CP_FINAL"),
    readers=(
        "kamailio.location.LocationRouting.route_dialog",
        "kamailio.location.LocationRouting.dialog_confirmed",
        "kamailio.location.LocationRouting.dialog_ended",
        "kamailio.location.LocationRouting.native_dialog_started",
    ),
)
"""Seen at once by every worker of the node: the ACK right after a 200 finds it, and confirms
it. Redis gets the record from the timer process within a tick of the ACK, so 60 s covers any
in-dialog request that comes before that; a 200 never ACKed lives here only, 60 s."""

DIALOG_WRITES = Htable(
    name="cplocq",
    size=10,
    key=(
        '``"<period> <pid> <part>"`` (``core.location.batch_key``): a worker\'s writes of one'
        " period of ``core.location.QUEUE_BATCH_MS``, at most ``core.location."
        "QUEUE_BATCH_WRITES`` a part, one writer per key"
    ),
    value=(
        "that worker's dialog record writes of that period, one a line (``core.location."
        "batch_line``: its monotonic ns, then ``core.location.PendingWrite.encode``)"
    ),
    writers=("kamailio.location.LocationRouting._queue",),
    readers=("kamailio.location.DialogWriteBehind.flush",),
)
"""The queue of dialog writes the timer process sends to Redis, one pipeline per tick, so a
call costs its SIP worker no Redis round trip; batched per worker and period, so the timer
reads and removes an entry per batch, not per write; it removes what Redis took."""

DIALOG_EVENTS = Htable(
    name="cpdlgev",
    size=8,
    key=(
        f"a slot number, ``$shtinc`` of ``{DIALOG_EVENT_SEQ}`` in ``{ROUTING.name}``: one writer"
        " per key"
    ),
    value=(
        '``"confirm <from tag> <to tag> <source ip> <Call-ID>"`` (an ACK) or ``"end <from tag>'
        ' <to tag> <Call-ID>"`` (a relayed BYE), of a request whose seal the config checked,'
        " each id hex-encoded after an ``x`` (``core.location.DialogEvent``);"
        ' ``"reply ..."`` (``core.queued_reply``), a proxy\'s 2xx the reply route counted out'
        " of flight"
    ),
    writers=("cfg:CP_QUEUE_EVENT", "kamailio.dialog_events.DialogEvents.drain"),
    readers=("kamailio.dialog_events.DialogEvents.drain",),
)
"""The sealed ACKs and BYEs of a native config's in-dialog route, for the timer process to
confirm or end their dialog records (``LocationRouting.dialog_confirmed``, ``dialog_ended``)
at its next tick, and the proxies' 2xx its reply route counted out of flight, for the timer
to count their outcomes and the dialog records they start (``kamailio.dialog_events``): the
SIP worker enters no Python for them. One queue, so that a 2xx's record is counted before its
ACK confirms it. Bounded: a worker writes no slot more than ``dialog_events_max`` past the
last one the timer read (the rest counted ``dialog_events_dropped``, or, a reply,
``reply_events_full`` and handled in Python), and no line longer than
``dialog_event_max_chars`` (it could name no recordable dialog) or, a reply,
``reply_event_max_chars`` (handled in Python)."""

LOCATION_CACHE = Htable(
    name="cplocc",
    size=10,
    autoexpire_s=10,
    key="AOR",
    value="its holder or none, with an expiry (``core.location.CachedHolder``)",
    writers=("kamailio.location.LocationRouting",),
    readers=("kamailio.location.LocationRouting._holder",),
)
"""Location lookups answered from this node's memory for ``location_cache_ms``; the entries
are dropped after 10 s, the setting's bound."""

# --- the edge's trust rules ------------------------------------------------------------------

RATES = Htable(
    name="cprate",
    size=12,
    autoexpire_s=2,
    initval=0,
    key="``edge.window_key``: source IP, 1 s window and kind (all requests, REGISTER, or"
    " flooding windows in a row of either)",
    value="int: requests of that source in that window; or the windows in a row, up to that"
    " one, in which it sent more than twice its limit",
    writers=("cfg:CP_FLOOD_WINDOW", "cfg:CP_FLOODING_WINDOW"),
    readers=("cfg:CP_FLOOD_WINDOW", "cfg:CP_FLOODING_WINDOW"),
)
"""The flood limits of ``kamailio.cfg`` (route ``CP_FLOOD``): a window's keys expire after two
windows of 1 s, so the next window still reads how many flooding windows led to it.
``initval`` lets ``$shtinc`` create a key."""

BANS = Htable(
    name="cpban",
    size=10,
    autoexpire_s=3600,
    key="source IP",
    value="1",
    writers=("cfg:CP_FLOODING_WINDOW",),
    readers=("cfg:CP_FLOOD",),
)
"""Banned sources, each written with its own expiry (``flood_ban_ms``, ``sht_setxi``): the
table's ``autoexpire`` only turns expiry on."""

NATIVE_EDGE_COUNTERS = (
    "relay_denied",
    "unsealed",
    "shed",
    "dropped_flood",
    "banned",
    "dropped_banned",
    "dialog_events_dropped",
    "reply_events_full",
)
"""The edge counters the config's own routes count (``embed/counterpoise-dialog.cfg``, and
``kamailio.cfg``'s flood limits, route ``CP_FLOOD``)."""
EDGE_COUNTERS = Htable(
    name="cpedge",
    size=6,
    key='``"<pid>"``; each of ``NATIVE_EDGE_COUNTERS``',
    value=(
        'that process\'s counts, ``"name=count ..."`` (``kamailio.counters``); int: what the '
        "config's routes counted (``$shtinc``)"
    ),
    writers=(
        "kamailio.counters.EDGE",
        "kamailio.native_dialog.NativeDialogTable",
        "cfg:CP_FLOOD",
        "cfg:CP_FLOODING_WINDOW",
        "cfg:CP_DENY",
        "cfg:CP_UNSEALED",
        "cfg:CP_DIALOG_EVENT",
        "cfg:CP_FINAL",
    ),
    readers=("kamailio.shared.SharedTable.read_counters",),
    operators="``htable.dump cpedge``: every process's count",
)
"""What the edge refused or could not read; the sync loop publishes the sums to Redis. A
config route counts with ``$shtinc``, which creates no key: the timer process creates those
at 0."""

DIALOG_SIGNING_KEY = "signing"
DIALOG_KEY_INNER, DIALOG_KEY_OUTER = "ki ", "ko "
"""Before a key id: that key's inner and outer keys (``core.dialog_seal.derived_keys``), for
the config's dialog routes, which sign with them as they stand and so parse nothing per
message."""
DIALOG_KEYS = Htable(
    name="cpkey",
    size=2,
    key=(
        f"a key id of the ring; ``{DIALOG_SIGNING_KEY}``; ``{DIALOG_KEY_INNER}<key id>``, "
        f"``{DIALOG_KEY_OUTER}<key id>``"
    ),
    value=(
        "``<active from, epoch ms> <secret hex>`` (``core.dialog_seal.DialogKey``); the id "
        "of the key new Record-Routes are sealed with; that key's inner and outer keys (hex)"
    ),
    writers=("kamailio.dialog_keys.publish",),
    readers=(
        "kamailio.dialog_keys.publish",
        "kamailio.dialog_keys.WorkerKeys",
        "cfg:CP_DENY",
        "cfg:CP_SEAL",
        "cfg:CP_MAC",
    ),
    operators="``htable.dump cpkey`` shows the secrets: the control socket is the admin's",
)
"""The Redis key ring (``store.dialog_keys``), copied by the timer process each second, so a
SIP worker seals and checks a Record-Route with no Redis round trip; the config's dialog
routes read it too (``embed/counterpoise-dialog.cfg``)."""

POOL_ADDRESSES = Htable(
    name="cpaddr",
    size=6,
    key=(
        "``core.dialog_seal.source_keys``: a pool address, or a proxy's sealed form and one of "
        "its addresses"
    ),
    value="int: 1",
    writers=("kamailio.pool_addresses.PoolAddresses",),
    readers=("cfg:CP_IN_DIALOG", "cfg:request_route"),
    operators=(
        "read by ``embed/counterpoise-dialog.cfg``'s ``CP_IN_DIALOG``; ``htable.dump cpaddr``: "
        "where it sees the pool"
    ),
)
"""The pool's addresses as the timer process resolved them, for the config's in-dialog route
(``embed/counterpoise-dialog.cfg``): who is a pool proxy, and where each may be seen; and for
``kamailio.cfg``'s request route: a pool proxy is exempt from the flood limits."""

# --- the node's metrics and view -------------------------------------------------------------

NODE_COUNTERS = Htable(
    name="cpstat",
    size=6,
    key='the names in ``monitoring.node`` (``"failover <proxy uri>"`` per proxy)',
    value="int: the node's count",
    writers=("kamailio.metrics.count", "kamailio.metrics.Endpoint", "cfg:CP_IN_DIALOG"),
    readers=("kamailio.metrics.Endpoint", "kamailio.shared.SharedTable.shed_count"),
)
"""The SIP workers count with ``sht_inc`` (one atomic write per event); it does not create a
missing key, so the timer process creates each at 0."""

ROUTE_TIMES = Htable(
    name="cproute",
    size=4,
    key='``"<pid>"``',
    value="that worker's histogram of route times (``monitoring.histogram.Histogram``)",
    writers=("kamailio.metrics.RouteTimer.observe",),
    readers=("kamailio.metrics.route_times",),
)
"""Written only with the metrics endpoint on."""

VIEW_NODE = "node"
PROXY_VIEW = Htable(
    name="cpview",
    size=6,
    key=f"proxy URI; ``{VIEW_NODE}``",
    value=(
        "JSON: the record the timer process publishes of that proxy; the node's name, Redis "
        "reachability and sync age, and panic"
    ),
    writers=("kamailio.view.NodeViewTable.update",),
    readers=("cli.health.sync_stamp_ms",),
    operators="``htable.get cpview <proxy uri>``, ``htable.dump cpview``",
)
"""The node's own view of its proxies, for ``kamcmd`` (app_python3 cannot register RPC
commands of its own)."""

ALL = (
    ROUTING,
    INFLIGHT,
    AWAITING,
    TALLIES,
    REJECTIONS,
    HEARD,
    PROXY_BY_ADDRESS,
    PROBES,
    RETRY_BUDGET,
    HELD,
    LOCATION_COUNTERS,
    DIALOGS,
    DIALOG_WRITES,
    DIALOG_EVENTS,
    LOCATION_CACHE,
    RATES,
    BANS,
    EDGE_COUNTERS,
    DIALOG_KEYS,
    POOL_ADDRESSES,
    NODE_COUNTERS,
    ROUTE_TIMES,
    PROXY_VIEW,
)
