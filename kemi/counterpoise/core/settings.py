"""Every setting of Counterpoise, grouped by concern, each with its bounds, unit and reason.

A setting is a field of one group (``Settings.failover.fr_timer_ms``), declared with
``setting()``: its default, the rules its value must satisfy, whether it changes at runtime,
and two lines of docs (``docs/configuration.md`` is generated from them). Names are unique
across groups, so a setting is set by its name alone: ``name = value`` at the top level of the
config file (TOML, ``/etc/counterpoise/counterpoise.toml`` or ``COUNTERPOISE_CONFIG``), or a
``[group]`` table, overridden by the variable ``COUNTERPOISE_<NAME>``. ``counterpoise up``
passes every value to the Kamailio it starts as these variables, so the KEMI code and the CLI
read the same settings; the ``node`` group becomes Kamailio's command line. The periods of
Kamailio's timer processes (``CP_SYNC_TIMER``, ``CP_RELEASE_TIMER``) stay in ``kamailio.cfg``.

Values are checked when a group is made: a bad one stops ``counterpoise up`` with one line
naming it, before anything starts.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import re
import tomllib
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from counterpoise.core import edge, sockets

ENV_PREFIX = "COUNTERPOISE_"

TRUE_WORDS = ("on", "true", "yes", "1")
FALSE_WORDS = ("off", "false", "no", "0")
"""How a boolean setting may be written in the environment."""

T = TypeVar("T")


class SettingError(ValueError):
    """A setting's value is unusable; ``name`` is the field, ``reason`` what is wrong."""

    def __init__(self, name: str, value: object, reason: str) -> None:
        super().__init__(f"{name}={value!r}: {reason}")
        self.name = name
        self.reason = reason


class ProbeMethod(enum.StrEnum):
    OPTIONS = "OPTIONS"
    INVITE = "INVITE"


class Fallback(enum.StrEnum):
    """What a request for a recorded user does when its holder proxy is unusable."""

    WEIGHT = "weight"
    REJECT = "reject"


class MemoryManager(enum.StrEnum):
    """Kamailio's allocator for its shared and private memory (``-x``)."""

    QM = "qm"
    TLSF = "tlsf"
    FM = "fm"


@dataclasses.dataclass(frozen=True)
class Rule:
    """A bound on a setting's value: ``holds`` tells, ``reason`` is the error, ``text`` how
    the docs show it."""

    text: str
    reason: str
    holds: Callable[[Any], bool]


def above(limit: float) -> Rule:
    return Rule(f"> {limit}", f"must be > {limit}", lambda value: bool(value > limit))


def at_least(limit: float) -> Rule:
    return Rule(f">= {limit}", f"must be >= {limit}", lambda value: bool(value >= limit))


def at_most(limit: float) -> Rule:
    return Rule(f"<= {limit}", f"must be <= {limit}", lambda value: bool(value <= limit))


def host_port(text: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``HOST:PORT`` (``[::1]:PORT`` for IPv6), None if malformed."""
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        return None
    return host, int(port)


HEADER_TEXT = re.compile(r"[ !#-~]*")
"""What kamailio.cfg can put in a SIP header value: no line breaks, no quotes."""

POSITIVE = above(0)
NOT_NEGATIVE = at_least(0)
FRACTION = Rule("0..1", "expected 0..1", lambda value: bool(0 <= value <= 1))
NOT_EMPTY = Rule("not empty", "must not be empty", bool)
HOST_PORT = Rule(
    "HOST:PORT or empty",
    "expected HOST:PORT or empty",
    lambda value: not value or host_port(value) is not None,
)
HEADER_VALUE = Rule(
    "printable ASCII, no quotes",
    "printable ASCII without quotes",
    lambda value: HEADER_TEXT.fullmatch(value) is not None,
)


def _parses_as_networks(text: str) -> bool:
    try:
        edge.parse_networks(text)
    except ValueError:
        return False
    return True


UPSTREAMS = Rule(
    "IP addresses and CIDR networks, comma-separated, or empty",
    "expected IP addresses and CIDR networks (no host bits set), comma-separated",
    _parses_as_networks,
)


LOCATION_CACHE_MAX_MS = 10_000
"""kamailio.cfg's htable ``cplocc`` drops its entries after 10 s: a longer cache is cut short."""


@dataclasses.dataclass(frozen=True)
class Spec:
    """What ``setting()`` declares beside a field's default."""

    meaning: str
    """What the setting is, with its unit."""
    why: str
    """Why the default is what it is."""
    rules: tuple[Rule, ...]
    runtime: bool
    """Changes on SIGHUP without a restart: read per request or per sync tick, not built into
    something at start-up."""


SPEC = "counterpoise.setting"


def setting(default: T, *rules: Rule, meaning: str, why: str, runtime: bool = False) -> T:
    """A settings field: ``default``, the ``rules`` its value must satisfy, and its docs."""
    spec = Spec(meaning, why, rules, runtime)
    return dataclasses.field(default=default, metadata={SPEC: spec})


def spec_of(field: dataclasses.Field[Any]) -> Spec:
    spec: Spec = field.metadata[SPEC]
    return spec


class Group:
    """A group of settings: checks each field against its declared rules when made."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    def __post_init__(self) -> None:
        """Raise ``SettingError`` naming the first bad value."""
        for field in dataclasses.fields(self):
            value, kind = getattr(self, field.name), type(field.default)
            if issubclass(kind, enum.Enum) and value not in tuple(kind):
                raise SettingError(field.name, value, f"expected {_choices(kind)}")
            for rule in spec_of(field).rules:
                if not rule.holds(value):
                    raise SettingError(field.name, value, rule.reason)


@dataclasses.dataclass(frozen=True)
class RedisSettings(Group):
    """Where the shared state is, and how the sync process talks to it."""

    redis_url: str = setting(
        "redis://127.0.0.1:6479/0",
        NOT_EMPTY,
        meaning="The shared state: a `redis://`, `rediss://` (TLS), `unix://` or"
        " `redis+sentinel://` URL.",
        why="The embedded Redis listens on 6479, not 6379, so it never collides with a Redis"
        " the host already runs.",
    )
    key_prefix: str = setting(
        "cp:",
        NOT_EMPTY,
        meaning="Prefix of every Redis key.",
        why="Short; several pools can share one Redis database with different prefixes.",
    )
    redis_timeout_ms: int = setting(
        250,
        POSITIVE,
        meaning="Connect and read timeout of one Redis round trip of the sync process (ms).",
        why="It bounds how late a sync tick can be, never a call (SIP workers have"
        " `location_redis_timeout_ms`).",
    )
    redis_backoff_initial_ms: int = setting(
        250,
        POSITIVE,
        meaning="Pause after a failed Redis call before the next try, doubling per further"
        " failure (ms).",
        why="A dead Redis costs one timeout per pause, not one per sync tick.",
    )
    redis_backoff_max_ms: int = setting(
        2000,
        POSITIVE,
        meaning="Longest pause of that backoff (ms).",
        why="Redis coming back is noticed within about 2 s.",
    )
    publish_interval_ms: int = setting(
        1000,
        POSITIVE,
        runtime=True,
        meaning="How often a node writes its weights and their inputs to Redis (ms).",
        why="Keeps `proxy list` and `watch` current at one pipelined write a second.",
    )
    node_ttl_ms: int = setting(
        10_000,
        POSITIVE,
        runtime=True,
        meaning="Expiry of a node's published weights (ms).",
        why="A stopped node's table disappears after ten missed publications.",
    )
    share_ttl_ms: int = setting(
        1000,
        POSITIVE,
        runtime=True,
        meaning="Expiry of what a node sends to each proxy, written every sync tick for the"
        " other nodes (ms).",
        why="A dead node's part of the pool goes back to the live ones within about five"
        " 200 ms ticks.",
    )
    redis_data_dir: str = setting(
        "",
        meaning="Folder of the embedded Redis's data and log; empty: `/var/lib/counterpoise/redis`"
        " as root, else `$XDG_STATE_HOME/counterpoise/redis`.",
        why="One fixed folder, so a restart of `counterpoise up` finds the operator's pool.",
    )
    redis_password_file: str = setting(
        "",
        meaning="File whose first line is the Redis password, when the URL carries none; empty:"
        " none, or the embedded Redis's own.",
        why="A password in a file shows neither in `ps` nor in the logged URL.",
    )


@dataclasses.dataclass(frozen=True)
class NodeSettings(Group):
    """The Kamailio ``counterpoise up`` starts: its name, sockets, processes and files, read by
    ``up`` for Kamailio's command line (the KEMI code reads ``node_id``, ``peers`` and
    ``metrics_listen``)."""

    node_id: str = setting(
        "",
        meaning="This balancer's name in Redis; empty: the host name (`up` sets"
        " `<host>:<sip port>`).",
        why="Several balancers on one host stay apart.",
    )
    listen: str = setting(
        "udp:127.0.0.1:5060",
        meaning="SIP sockets, comma-separated `PROTO:HOST:PORT` (`udp`, `tcp`, `tls`; IPv6 in"
        " brackets; a bare `HOST:PORT` is UDP).",
        why="Loopback, so a first `counterpoise up` exposes nothing.",
    )
    advertise: str = setting(
        "",
        meaning="`HOST[:PORT]` written in Via and Record-Route instead of the socket's address;"
        " empty: the socket's.",
        why="Only a node behind NAT needs it.",
    )
    peers: str = setting(
        "",
        meaning="The other nodes behind the same floating address, comma-separated"
        " `PROTO:HOST:PORT` of a socket of each, as `listen`: a reply that matches no"
        " transaction here but proves it answers a node's request is also sent to each.",
        why="Empty: a lone node has no one to pass it to. In a pair, the address moving back"
        " while the other node waits on a reply would have that node retry the call on"
        " another proxy (`docs/deploying.md`).",
    )
    workers: int = setting(
        4,
        POSITIVE,
        meaning="SIP worker processes per UDP socket, and TCP workers in all (Kamailio's `-n`).",
        why="Twice the cores of the test machine, so a worker waiting on Redis leaves another to"
        " run; raise it with the cores.",
    )
    shm_mb: int = setting(
        256,
        POSITIVE,
        meaning="Kamailio's shared memory, for transactions and htables (`-m`, MB).",
        why="One SBC at 1000 calls/s holds thousands of transactions: Kamailio's own 64 MB ran"
        " out there (`tests/e2e/test_flood.py`).",
    )
    memory_manager: MemoryManager = setting(
        MemoryManager.TLSF,
        meaning="Kamailio's allocator for its shared and private memory (`-x`): `qm`, `tlsf` or"
        " `fm`.",
        why="`tlsf` spends less CPU on every message (`docs/benchmarks.md`); `qm`, Kamailio's own"
        " default, keeps its memory debugging, for a leak hunt.",
    )
    run_dir: str = setting(
        "",
        meaning="Folder of Kamailio's pid file and control sockets; empty: `/run/counterpoise` as"
        " root, else `$XDG_RUNTIME_DIR/counterpoise` (or `/tmp/counterpoise-<uid>`).",
        why="systemd's RuntimeDirectory for the service, the user's runtime folder otherwise.",
    )
    user: str = setting(
        "",
        meaning="User Kamailio's processes run as after binding the sockets (`-u`); empty: the"
        " user running `up`.",
        why="Only root can switch; the run folder and a private copy of the Redis password file"
        " are handed to this user.",
    )
    group: str = setting(
        "",
        meaning="Group of Kamailio's processes (`-g`); empty: the user's primary group.",
        why="The user's own group is what a service normally runs as.",
    )
    log_file: str = setting(
        "",
        meaning="File Kamailio logs to; empty: `up`'s own stderr.",
        why="Under systemd stderr is the journal.",
    )
    tls_certificate: str = setting(
        "",
        meaning="PEM certificate (chain) of the `tls` sockets, also shown to proxies reached over"
        " TLS.",
        why="Required only when a `tls` socket is listed.",
    )
    tls_private_key: str = setting(
        "",
        meaning="PEM private key of `tls_certificate`.",
        why="Required with `tls_certificate`.",
    )
    metrics_listen: str = setting(
        "",
        HOST_PORT,
        meaning="`HOST:PORT` of the node's Prometheus endpoint (`GET /metrics`); empty: none"
        " (`up --metrics` sets it).",
        why="Off: an open port is an operator's decision.",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            listening = sockets.parse_sockets(self.listen)
        except sockets.InvalidSocket as error:
            raise SettingError("listen", self.listen, str(error)) from None
        if self.advertise:
            try:
                sockets.parse_advertise(self.advertise)
            except sockets.InvalidSocket as error:
                raise SettingError("advertise", self.advertise, str(error)) from None
        if self.peers:
            try:
                sockets.parse_sockets(self.peers)
            except sockets.InvalidSocket as error:
                raise SettingError("peers", self.peers, str(error)) from None
        tls = any(socket.proto == "tls" for socket in listening)
        if tls and not (self.tls_certificate and self.tls_private_key):
            raise SettingError(
                "tls_certificate", self.tls_certificate, "a tls socket needs a certificate and key"
            )

    def listen_sockets(self) -> tuple[sockets.ListenSocket, ...]:
        """The ``listen`` sockets, parsed (checked when the settings were made)."""
        return sockets.parse_sockets(self.listen)

    def peer_sockets(self) -> tuple[sockets.ListenSocket, ...]:
        """The ``peers``, parsed (checked when the settings were made)."""
        return sockets.parse_sockets(self.peers) if self.peers else ()

    def node_name(self) -> str:
        """This node's identity in Redis."""
        return self.node_id or os.uname().nodename


@dataclasses.dataclass(frozen=True)
class FailoverSettings(Group):
    """SIP transaction timers, and how many proxies a request may try."""

    fr_timer_ms: int = setting(
        1500,
        POSITIVE,
        runtime=True,
        meaning="How long to wait for a proxy's first reply before failing over; also the"
        " probes' timeout (ms).",
        why="A live proxy on a LAN answers 100 Trying within milliseconds; 1.5 s bounds what a"
        " dead one costs a caller (SIP's own is 32 s).",
    )
    fr_inv_timer_ms: int = setting(
        120_000,
        POSITIVE,
        runtime=True,
        meaning="After a provisional reply, how long an INVITE may ring before it times out (ms).",
        why="The usual ringing limit of 2 minutes: a ringing call is not a failed proxy.",
    )
    progress_timeout_ms: int = setting(
        0,
        NOT_NEGATIVE,
        runtime=True,
        meaning="After a proxy's 100 Trying, how long an INVITE may wait for 18x or a final reply"
        " before it is cancelled there and tried elsewhere; 0: off (ms).",
        why="Off, as in Kamailio: a callee behind a slow gateway (5-10 s to its 183) would be"
        " called twice. On, it saves the calls a proxy took before it died.",
    )
    in_dialog_fr_timer_ms: int = setting(
        30_000,
        POSITIVE,
        runtime=True,
        meaning="How long an in-dialog request (BYE, re-INVITE) waits for the proxy of its route"
        " set before the balancer answers 408 (ms).",
        why="There is no other proxy to try, so a short timer would only fail hang-ups; tm's"
        " default, close to RFC 3261's Timer F.",
    )
    max_attempts: int = setting(
        3,
        POSITIVE,
        runtime=True,
        meaning="Proxies tried per request: the first choice plus failovers.",
        why="With a third of the pool dead, 3 independent picks leave 3.7 % needing more, and"
        " picks avoid proxies already down.",
    )
    retry_budget_fraction: float = setting(
        0.2,
        FRACTION,
        meaning="Failovers a node may spend, as a fraction of the requests it relayed in the last"
        " `retry_budget_window_ms`; beyond it a request gets its failure as the answer.",
        why="Finagle's default: a dead proxy's share is retried, while retries cannot multiply"
        " an overload.",
    )
    retry_budget_floor_per_s: float = setting(
        2.0,
        NOT_NEGATIVE,
        meaning="Failovers per second allowed on top of that fraction.",
        why="A quiet node still fails over every request of a dead proxy: at 2 calls/s, a third"
        " of them on a dead proxy is 0.7 retries/s.",
    )
    retry_budget_window_ms: int = setting(
        10_000,
        POSITIVE,
        meaning="How far back the retry budget counts requests and failovers (ms).",
        why="Finagle's: a dead proxy's burst of timeouts fits in a budget saved over seconds of"
        " normal traffic.",
    )


@dataclasses.dataclass(frozen=True)
class LatencySettings(Group):
    """The latency estimate that weighs proxies against each other."""

    latency_rise_tau_ms: int = setting(
        300,
        POSITIVE,
        runtime=True,
        meaning="Time constant of the latency estimate when latency goes up (ms).",
        why="A proxy that turns slow loses most of its share in under a second.",
    )
    latency_fall_tau_ms: int = setting(
        2000,
        POSITIVE,
        runtime=True,
        meaning="Time constant of the latency estimate when latency goes down (ms).",
        why="A recovering proxy regains its share over seconds, so a flapping proxy does not make"
        " the split oscillate.",
    )
    latency_offset_ms: float = setting(
        10.0,
        POSITIVE,
        runtime=True,
        meaning="Added to every latency before weights compare them (ms).",
        why="Differences below 10 ms are scheduling noise on a LAN; a proxy 100 ms slower than"
        " its peers still gets a tenth of their weight.",
    )
    failure_penalty_ms: float = setting(
        500.0,
        POSITIVE,
        runtime=True,
        meaning="Latency charged for a failed request: 408, 5xx, timeout (ms).",
        why="A proxy answering everything at once with 503 would look fastest; failing 10 % in"
        " 2 ms it averages ~52 ms instead.",
    )


@dataclasses.dataclass(frozen=True)
class HealthSettings(Group):
    """When a proxy is up, set aside, down, or in slow start."""

    down_after_failures: int = setting(
        3,
        POSITIVE,
        runtime=True,
        meaning="Consecutive failures (requests or probes) that mark a proxy down.",
        why="Rides out one lost UDP packet or one overloaded moment without flapping.",
    )
    up_after_probes: int = setting(
        2,
        POSITIVE,
        runtime=True,
        meaning="Consecutive answered probes that bring a down proxy back.",
        why="One answer may be a fluke; two take 0.4 s at `down_probe_interval_ms`.",
    )
    slow_start_ms: int = setting(
        8000,
        NOT_NEGATIVE,
        runtime=True,
        meaning="How long a new or returning proxy ramps from `slow_start_floor` to its full"
        " weight; 0: no ramp (ms).",
        why="A proxy that just restarted is not flooded with every new call.",
    )
    slow_start_floor: float = setting(
        0.1,
        FRACTION,
        runtime=True,
        meaning="Fraction of its weight a proxy gets at the start of slow start.",
        why="Enough requests to measure it from the start, too few to flood it.",
    )
    slow_start_after_down_ms: int = setting(
        30_000,
        NOT_NEGATIVE,
        meaning="A proxy down longer than this returns through slow start; one down less returns"
        " at once with its latency estimate (ms).",
        why="Longer than a stall or a GC pause, shorter than a restart for maintenance, which"
        " may come back cold.",
    )
    max_ejected_fraction: float = setting(
        0.5,
        FRACTION,
        meaning="Most of the pool's capacity that may be down at once for failed requests while"
        " still answering probes; one proxy may always be.",
        why="A pool that lost half its capacity to ejections is more likely overloaded than"
        " broken, and ejecting more would cascade.",
    )
    silent_after_ms: int = setting(
        300,
        NOT_NEGATIVE,
        meaning="A proxy that said nothing this long while requests went to it gets no new ones"
        " while another is heard; 0: off (ms).",
        why="A live proxy answers 100 Trying within milliseconds and a saturated one still"
        " answers, so a tick and a half of silence is a freeze or a death.",
    )


@dataclasses.dataclass(frozen=True)
class TimerSettings(Group):
    """The first-reply timeout of a queueing proxy, holding requests at the balancer, and
    shedding them past the pool's or the node's capacity."""

    saturated_fr_timer_ms: int = setting(
        6000,
        POSITIVE,
        meaning="First-reply timeout, instead of `fr_timer_ms`, of requests to a proxy that is"
        " alive but queueing (ms).",
        why="Its queue, not death, delays it, and a retry would only double the work; 6 s outlasts"
        " the queue a dead peer leaves, within a caller's patience.",
    )
    saturated_memory_ms: int = setting(
        2000,
        NOT_NEGATIVE,
        meaning="A proxy that timed out a request this recently while still answering counts as"
        " saturated; 0: none does (ms).",
        why="Two probe periods: a proxy that stays saturated times out again within them, so"
        " the mark holds between probes instead of flapping.",
    )
    hold_queue_ms: int = setting(
        500,
        NOT_NEGATIVE,
        meaning="When every weighted proxy queues this long (its completed requests per second"
        " times this), new requests wait at the balancer for room; 0: off (ms).",
        why="The shortest tail in the stall and kill benchmarks; steady load at 70 % holds"
        " nothing.",
    )
    hold_max_ms: int = setting(
        4000,
        POSITIVE,
        meaning="A request held this long goes to the proxy with the least in flight per unit of"
        " weight, room or not (ms).",
        why="Holding must never cost a call: longer than a killed proxy's backlog takes to drain,"
        " well within a caller's patience.",
    )
    shed_hold_ms: int = setting(
        0,
        NOT_NEGATIVE,
        at_most(2000),
        meaning="When every weighted proxy is queueing at its limit and the requests held already"
        " take the pool this long to drain (held over the pool's completed requests per second),"
        " a new initial request is answered 503 with `Retry-After` at once instead of held; 0:"
        " never shed, hold as before (ms). 100 is the value the benchmarks measure.",
        why="Off by default: the limits follow each proxy's measured throughput, which lags a"
        " sudden step in load, and an upstream stepping to 2000 calls/s on a fast pool had a"
        " third of its calls shed that holding carried (`bash scripts/bench.sh --overhead`,"
        " saturation run). Past a known capacity, 100 keeps every proxy fed while the excess"
        " hears its 503 in the time of a round trip.",
    )
    shed_queue_ms: int = setting(
        100,
        POSITIVE,
        at_most(2000),
        meaning="While shedding is on (`shed_hold_ms` > 0), each proxy's in-flight limit is the"
        " requests its workers are busy with (completed per second times its service time,"
        " the 100 Trying to its first reply) plus this much queue, never more than"
        " `hold_queue_ms` allows; a proxy whose queue wait stands past half of it holds new"
        " requests at the balancer (ms).",
        why="Past the pool's capacity a queue at a proxy only makes every admitted call wait"
        " longer: 100 ms of queue is five release ticks, enough to keep every proxy busy, and"
        " the limit never falls below what its workers take, so none is starved.",
    )
    shed_outage_grace_ms: int = setting(
        10_000,
        NOT_NEGATIVE,
        meaning="A proxy out of the weighting (silent, down) that was heard from this recently may"
        " come back: while one is, nothing is shed and requests are held as before (ms).",
        why="A stalled or restarted proxy takes its backlog back within seconds, and holding"
        " then answers every call; one silent for longer is gone and its capacity with it.",
    )
    shed_node_backlog_kb: int = setting(
        128,
        NOT_NEGATIVE,
        meaning="When the node's UDP SIP sockets hold this much unread at two sync ticks in a"
        " row, its SIP workers are short of CPU: a growing share of new initial requests is"
        " answered 503 with `Retry-After` on arrival, shrinking again once they keep up; 0: off"
        " (KiB).",
        why="Linux's default receive buffer is 208 KiB: past 128 KiB the kernel is about to drop"
        " what the workers cannot read, calls in progress included, and a 503 costs a worker far"
        " less than a call; a node with room reads its queue empty between two ticks.",
    )
    shed_retry_after_s: int = setting(
        1,
        POSITIVE,
        at_most(3600),
        meaning="`Retry-After` of the 503 a shed request gets (s).",
        why="An upstream that honours it stops sending to this node that long (RFC 3261 21.5.4):"
        " the shortest, so a busy second costs at most one second of its traffic.",
    )


@dataclasses.dataclass(frozen=True)
class ProbeSettings(Group):
    """The requests that check proxies with no traffic."""

    probe_interval_ms: int = setting(
        1000,
        POSITIVE,
        runtime=True,
        meaning="How often every proxy is probed (ms).",
        why="A proxy that stops answering is down within `down_after_failures` periods, with or"
        " without traffic.",
    )
    down_probe_interval_ms: int = setting(
        200,
        POSITIVE,
        runtime=True,
        meaning="How often a proxy that is down is probed instead (ms).",
        why="A restarted proxy is back in 0.4 s while the rest carry its load; the sync tick is"
        " 200 ms, so shorter gains nothing.",
    )
    probe_from_uri: str = setting(
        "sip:counterpoise@localhost",
        meaning="From URI of probes.",
        why="Names the balancer in a proxy's logs.",
    )
    probe_method: ProbeMethod = setting(
        ProbeMethod.OPTIONS,
        meaning="`OPTIONS`, or `INVITE` to `probe_invite_user` along the proxy's real call path"
        " (a 2xx is ACKed and BYEd).",
        why="Every proxy answers OPTIONS; an INVITE probe measures what a call waits, but the"
        " proxy must answer it itself.",
    )
    probe_contact_uri: str = setting(
        "",
        meaning="Contact of INVITE probes; empty: `probe_from_uri` (`up` sets"
        " `sip:counterpoise@<listen address>`).",
        why="Requests within a probe's dialog then reach the balancer itself.",
    )
    probe_invite_user: str = setting(
        "counterpoise-probe",
        meaning="Request-URI user of INVITE probes.",
        why="A name the downstream recognises and answers itself, so a probe never rings a phone.",
    )


@dataclasses.dataclass(frozen=True)
class LoadSettings(Group):
    """The load the proxies report (their agent, or ``X-CP-Load`` in replies)."""

    load_blackout_ms: int = setting(
        2000,
        NOT_NEGATIVE,
        meaning="A proxy's load reports count only once they have arrived without a gap this"
        " long; 0: at once (ms).",
        why="The first samples after a start are the least settled (as in gRPC's weighted"
        " round robin); two agent intervals.",
    )
    load_expiry_ms: int = setting(
        3000,
        POSITIVE,
        meaning="A report not renewed this long no longer counts, and the next starts a new"
        " blackout (ms).",
        why="Three agent intervals, the agent's key expiry: a dead agent cannot freeze a weight,"
        " one late report drops nothing.",
    )
    load_smoothing_tau_ms: int = setting(
        3000,
        POSITIVE,
        meaning="Time constant of the moving average of each load source and of each proxy's"
        " throughput (ms).",
        why="Reports are noisy point samples and load steers slowly; shorter, the load and the"
        " split chase each other.",
    )
    load_headroom_floor: float = setting(
        0.05,
        FRACTION,
        runtime=True,
        meaning="Smallest headroom (1 - utilisation) the weights use.",
        why="A proxy at 100 % still gets the odd request, so its latency and load stay measured.",
    )


@dataclasses.dataclass(frozen=True)
class LocationSettings(Group):
    """The location server: which proxy holds a user or a dialog."""

    location_server: bool = setting(
        True,
        meaning="On: registrations and INVITE dialogs are recorded, and requests for a recorded"
        " user go to its proxy. Off: weight alone, and SIP workers never touch Redis.",
        why="A user registered at one proxy is reachable through every balancer.",
    )
    location_fallback: Fallback = setting(
        Fallback.WEIGHT,
        meaning="When a recorded user's proxy is unusable: `weight` routes by weight, `reject`"
        " answers 480. A REGISTER always goes by weight.",
        why="Never worse than no location server; `reject` suits proxies with private location"
        " tables.",
    )
    location_redis_timeout_ms: int = setting(
        30,
        POSITIVE,
        meaning="Bound of one Redis round trip of a SIP worker: a lookup or a registration (ms).",
        why="A LAN round trip is well under 1 ms; this caps what a hung Redis costs one call.",
    )
    dialog_record_ttl_ms: int = setting(
        7_200_000,
        NOT_NEGATIVE,
        meaning="Lifetime of a dialog record (Call-ID to proxy) no BYE deleted; 0: no dialog"
        " records (ms).",
        why="Two hours outlast nearly every call, and the records of lost BYEs do not pile up.",
    )
    dialog_records_per_source: int = setting(
        10_000,
        POSITIVE,
        at_most(1_000_000),
        meaning="Most dialog records one caller address (an IPv6 /64) holds in Redis; the"
        " calls beyond it go on by their route set, unrecorded, and are counted.",
        why="A phone holds a few calls, a busy SBC a few thousand; a caller that never hangs"
        " up fills at most about 13 MB of Redis (docs/location.md).",
    )
    location_cache_ms: int = setting(
        1000,
        NOT_NEGATIVE,
        at_most(LOCATION_CACHE_MAX_MS),
        meaning="How long a node keeps a lookup's answer in shared memory; 0: no cache (ms).",
        why="Users re-register every few minutes, so following other nodes' changes within 1 s"
        " costs nothing; `cplocc` expires entries after 10 s.",
    )
    dialog_queue_max_bytes: int = setting(
        8_000_000,
        POSITIVE,
        meaning="Bytes of dialog record writes kept queued for Redis; beyond it the oldest are"
        " dropped and counted.",
        why="About 10 000 writes, a minute of Redis outage at 100 calls/s, an eighth of the"
        " default shared memory.",
    )
    record_call_id_max_chars: int = setting(
        256,
        POSITIVE,
        meaning="Longest Call-ID written into a dialog record; a longer one is routed, not"
        " recorded.",
        why="Phones use 20 to 80 characters; huge Call-IDs cannot fill memory.",
    )
    record_tag_max_chars: int = setting(
        128,
        POSITIVE,
        meaning="Longest From/To tag written into a dialog record; longer: not recorded.",
        why="Tags are 8 to 40 characters in practice.",
    )
    record_aor_max_chars: int = setting(
        256,
        POSITIVE,
        meaning="Longest address-of-record (user@host) looked up or recorded; longer: routed by"
        " weight.",
        why="A junk name costs no Redis round trip and becomes no Redis key.",
    )


@dataclasses.dataclass(frozen=True)
class EdgeSettings(Group):
    """What the balancer accepts from, and tells, the untrusted side."""

    trusted_upstreams: str = setting(
        "",
        UPSTREAMS,
        meaning="Sources exempt from the flood limits, as the pool's proxies are: IP addresses"
        " and CIDR networks, comma-separated (`10.0.0.0/24,192.0.2.7,2001:db8::/32`). They"
        " are routed as any outside source; only the limits do not apply.",
        why="An SBC or a trunk relays the calls of thousands of users from one address: no"
        " per-source limit fits it and a stranger at once.",
    )
    flood_requests_per_s: int = setting(
        4000,
        NOT_NEGATIVE,
        meaning="Requests one untrusted source IP may send per second; past it, a request that"
        " starts a dialog or transaction is answered 503 (Retry-After: 1), and one of a call in"
        " progress still passes up to twice the limit; 0: no limit.",
        why="An SBC relaying 1000 calls/s sends 3000 (INVITE, ACK, BYE) plus retransmissions"
        " and keepalives, and stays under it; a phone sends under one a second.",
    )
    flood_registers_per_s: int = setting(
        50,
        NOT_NEGATIVE,
        meaning="REGISTERs one untrusted source IP may send per second; past it they are"
        " answered 503 (Retry-After: 1); 0: no limit.",
        why="Each costs a Redis round trip and scanners guess with them; 1000 phones behind one"
        " NAT send 17/s.",
    )
    flood_ban_windows: int = setting(
        3,
        NOT_NEGATIVE,
        at_most(60),
        meaning="Seconds in a row in which a source sends more than twice a limit before it is"
        " banned; 0: never banned, only shed.",
        why="Past twice its limit a source has ignored its 503s and even its calls in progress"
        " are refused: three such seconds in a row is a flood, not a busy client trimmed to its"
        " limit, which is shed but never banned.",
    )
    flood_ban_ms: int = setting(
        60_000,
        POSITIVE,
        meaning="How long a banned source is ignored: no reply, no work (ms).",
        why="A flood costs two shared-memory lookups a packet; a source that crossed the line"
        " by mistake is back within a minute.",
    )
    sip_signature: str = setting(
        "",
        HEADER_VALUE,
        meaning="`Server` header of the balancer's own replies and `User-Agent` of its probes;"
        " empty: neither is sent.",
        why="A product and version tell a scanner which exploits to try.",
    )


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every setting, by group: ``settings.failover.fr_timer_ms``."""

    redis: RedisSettings = dataclasses.field(default_factory=RedisSettings)
    node: NodeSettings = dataclasses.field(default_factory=NodeSettings)
    failover: FailoverSettings = dataclasses.field(default_factory=FailoverSettings)
    latency: LatencySettings = dataclasses.field(default_factory=LatencySettings)
    health: HealthSettings = dataclasses.field(default_factory=HealthSettings)
    timers: TimerSettings = dataclasses.field(default_factory=TimerSettings)
    probes: ProbeSettings = dataclasses.field(default_factory=ProbeSettings)
    load: LoadSettings = dataclasses.field(default_factory=LoadSettings)
    location: LocationSettings = dataclasses.field(default_factory=LocationSettings)
    edge: EdgeSettings = dataclasses.field(default_factory=EdgeSettings)

    @classmethod
    def of(cls, **values: Any) -> Settings:
        """The defaults with ``values`` by setting name (``Settings.of(fr_timer_ms=800)``)."""
        return cls().with_values(**values)

    def with_values(self, **values: Any) -> Settings:
        """These settings with ``values`` by setting name, checked; ``SettingError`` for an
        unknown name or a bad value."""
        changes: dict[str, dict[str, Any]] = {}
        for name, value in values.items():
            if name not in GROUP_OF:
                raise SettingError(name, value, "unknown setting")
            changes.setdefault(GROUP_OF[name], {})[name] = value
        return dataclasses.replace(
            self,
            **{
                group: dataclasses.replace(getattr(self, group), **given)
                for group, given in changes.items()
            },
        )

    def value(self, name: str) -> Any:
        """The value of the setting ``name``."""
        return getattr(getattr(self, GROUP_OF[name]), name)


def _fields_by_name() -> dict[str, tuple[str, dataclasses.Field[Any]]]:
    defaults = Settings()
    return {
        field.name: (group.name, field)
        for group in dataclasses.fields(Settings)
        for field in dataclasses.fields(getattr(defaults, group.name))
    }


_BY_NAME = _fields_by_name()
FIELDS = {name: field for name, (_, field) in _BY_NAME.items()}
"""Every setting's field by its name, group by group."""
GROUP_OF = {name: group for name, (group, _) in _BY_NAME.items()}
"""The group (attribute of ``Settings``) of every setting."""
GROUPS = tuple(group.name for group in dataclasses.fields(Settings))
RUNTIME = frozenset(name for name, field in FIELDS.items() if spec_of(field).runtime)
"""The settings that change without a restart (``counterpoise up`` re-reads its config on
SIGHUP): the others are built into something at start-up and wait for one."""


def kind_of(name: str) -> type[Any]:
    """The type of the setting ``name`` (of its default)."""
    return type(FIELDS[name].default)


CONFIG_ENV = "COUNTERPOISE_CONFIG"
"""Names the config file; set but empty: no file (``to_environ`` sets it so for the
Kamailio processes, whose environment already holds every value)."""

DEFAULT_CONFIG = "/etc/counterpoise/counterpoise.toml"
"""Read when it exists and ``COUNTERPOISE_CONFIG`` is not set."""


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The defaults, then the config file, then the ``COUNTERPOISE_*`` variables of
    ``environ`` (each layer wins over the one before).

    An unknown name, a value that does not parse as the setting's type, or one out of bounds
    raises ``SettingError`` naming where it came from, so a typo stops the start-up with a
    clear message instead of running on a default.
    """
    env = os.environ if environ is None else environ
    given = file_values(env)  # name -> (where, value)
    _reject_unknown(
        (name[len(ENV_PREFIX) :].lower(), name)
        for name in env
        if name.startswith(ENV_PREFIX) and name != CONFIG_ENV
    )
    for field in FIELDS:
        name = ENV_PREFIX + field.upper()
        if name in env:
            given[field] = (name, parse_value(field, kind_of(field), env[name], name))
    try:
        return Settings.of(**{field: value for field, (_, value) in given.items()})
    except SettingError as error:
        if error.name not in given:  # a default that another given value does not fit
            raise
        where, value = given[error.name]
        raise SettingError(where, value, error.reason) from None


def file_values(env: Mapping[str, str]) -> dict[str, tuple[str, object]]:
    """The config file's settings, each with where it was written (``FILE: name``). A
    setting is written at the top level or in its group's table (``[failover]``)."""
    path = Path(env.get(CONFIG_ENV, DEFAULT_CONFIG))
    if CONFIG_ENV in env and not env[CONFIG_ENV]:
        return {}
    try:
        with path.open("rb") as config:
            table = tomllib.load(config)
    except FileNotFoundError:
        if CONFIG_ENV in env:
            raise SettingError(CONFIG_ENV, str(path), "no such file") from None
        return {}
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise SettingError(CONFIG_ENV, str(path), str(error)) from None
    written = {name: (f"{path}: {name}", value) for name, value in table.items()}
    for group in GROUPS:
        if isinstance(table.get(group), dict):
            del written[group]
            grouped = table[group].items()
            members = [name for name in FIELDS if GROUP_OF[name] == group]
            _reject_unknown(((name, f"{path}: {group}.{name}") for name, _ in grouped), members)
            written |= {name: (f"{path}: {group}.{name}", value) for name, value in grouped}
    _reject_unknown((name, where) for name, (where, _) in written.items())
    return {
        name: (where, _typed(name, kind_of(name), value, where))
        for name, (where, value) in written.items()
    }


def _reject_unknown(names: Iterable[tuple[str, str]], known: Collection[str] = FIELDS) -> None:
    """``SettingError`` for the first ``(name, where)`` whose name is not ``known``."""
    for name, where in names:
        if name not in known:
            raise SettingError(where, name, f"unknown setting; valid: {', '.join(sorted(known))}")


def _typed(name: str, kind: type[Any], value: object, where: str) -> object:
    """A TOML value as the setting's type: the matching TOML type, or a string parsed as an
    environment variable would be (``"on"``, ``"INVITE"``)."""
    if isinstance(value, str) and kind is not str:
        return parse_value(name, kind, value, where)
    if kind is bool:
        matches = isinstance(value, bool)
    elif kind is float:
        matches = isinstance(value, int | float) and not isinstance(value, bool)
    else:  # TOML's true is no int
        matches = isinstance(value, kind) and not isinstance(value, bool)
    if not matches:
        raise SettingError(where, value, f"expected a {kind.__name__}")
    return kind(value)


def parse_value(name: str, kind: type[Any], raw: str, where: str | None = None) -> object:
    """``raw`` as a value of a setting's type, or ``SettingError`` naming where it came from
    (``where``, by default its variable)."""
    where = where or ENV_PREFIX + name.upper()
    if kind is bool:
        if raw.lower() in TRUE_WORDS + FALSE_WORDS:
            return raw.lower() in TRUE_WORDS
        raise SettingError(where, raw, "expected on or off")
    if issubclass(kind, enum.Enum):
        for member in kind:
            if raw.lower() == str(member).lower():
                return member
        raise SettingError(where, raw, f"expected {_choices(kind)}")
    try:
        return kind(raw)
    except ValueError:
        raise SettingError(where, raw, f"not a valid {kind.__name__}") from None


def _choices(kind: type[enum.Enum]) -> str:
    return " or ".join(str(member) for member in kind)


def to_environ(settings: Settings, changed_only: bool = False) -> dict[str, str]:
    """The ``COUNTERPOISE_*`` variables that reproduce ``settings`` in another process (with
    no config file: they hold every value). ``changed_only``: only those that differ from
    the defaults, for another version of Counterpoise, which may not know every name."""
    defaults = Settings()
    return {
        CONFIG_ENV: "",
        **{
            ENV_PREFIX + name.upper(): as_text(settings.value(name))
            for name in FIELDS
            if not changed_only or settings.value(name) != defaults.value(name)
        },
    }


def as_text(value: object) -> str:
    """A setting's value as written in the environment."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def runtime_changes(old: Settings, new: Settings) -> tuple[dict[str, str], list[str]]:
    """What differs from ``old`` to ``new``: the ``RUNTIME`` settings with their new values as
    text (``with_runtime`` takes them), and the names of the others (they need a restart)."""
    changed = [name for name in FIELDS if old.value(name) != new.value(name)]
    runtime = {name: as_text(new.value(name)) for name in changed if name in RUNTIME}
    return runtime, [name for name in changed if name not in RUNTIME]


def runtime_values(settings: Settings) -> dict[str, str]:
    """Every ``RUNTIME`` setting of ``settings`` as text: what ``up`` pushes on SIGHUP (all of
    them, so a value set back to its start-up one is pushed too)."""
    return {name: as_text(settings.value(name)) for name in FIELDS if name in RUNTIME}


def with_runtime(settings: Settings, changes: Mapping[str, str]) -> Settings:
    """``settings`` with ``changes`` (``runtime_changes``'s text values) applied and checked;
    ``SettingError`` for a name outside ``RUNTIME`` or a bad value."""
    values = {}
    for name, raw in changes.items():
        if name not in RUNTIME:
            raise SettingError(name, raw, "not changeable at runtime")
        values[name] = parse_value(name, kind_of(name), raw, name)
    return settings.with_values(**values)
