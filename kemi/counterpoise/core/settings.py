"""Every knob of Counterpoise, in one place, with its unit, default and reason.

Each field can be set in the config file (TOML, ``/etc/counterpoise/counterpoise.toml`` or
``COUNTERPOISE_CONFIG``) and overridden by an environment variable named ``COUNTERPOISE_``
plus the field name in upper case (``COUNTERPOISE_FR_TIMER_MS=800``). ``counterpoise up``
sets these variables for the Kamailio it starts, so the Python code inside every Kamailio
process and the command-line tool read the same values; the node block (sockets, workers,
memory, user) becomes Kamailio's command line. Only the period of the sync timer
(``CP_SYNC_TIMER``) lives in ``kamailio.cfg`` instead. ``RUNTIME`` (at the end) lists the
settings that change without a restart.

Every value is checked here, when the settings are made (``Settings.__post_init__``): a bad
one stops ``counterpoise up`` with one line before anything starts.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path

from counterpoise.core import sockets

ENV_PREFIX = "COUNTERPOISE_"

TRUE_WORDS = ("on", "true", "yes", "1")
FALSE_WORDS = ("off", "false", "no", "0")
"""How a boolean setting may be written in the environment."""


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


@dataclasses.dataclass(frozen=True)
class Settings:
    # --- Where the shared state is -------------------------------------------------------
    redis_url: str = "redis://127.0.0.1:6479/0"
    """The embedded Redis (``redis/redis.conf``) listens on 6479, not 6379, so it never
    collides with a Redis the host already runs. Any URL ``store.client.connect`` takes:
    ``redis://``, ``rediss://`` (TLS), ``unix://``, ``redis+sentinel://``."""

    key_prefix: str = "cp:"
    """Prefix of every Redis key, so several pools can share one Redis database."""

    node_id: str = ""
    """Name of this balancer node in Redis; empty means the host name. ``counterpoise up``
    sets ``<hostname>:<sip port>`` so several balancers on one host stay apart."""

    # --- Redis access from the sync process -------------------------------------------------
    redis_timeout_ms: int = 250
    """Connect and read timeout of one Redis round trip of the sync timer process, so it
    bounds how late one sync tick can be, not a call (SIP workers that use Redis for the
    location server have their own bound, ``location_redis_timeout_ms``)."""

    redis_backoff_initial_ms: int = 250
    """After a failed Redis call the sync loop leaves Redis alone this long, doubling per
    further failure, so a dead Redis costs one timeout per backoff period, not one per tick."""

    redis_backoff_max_ms: int = 2000
    """Upper bound of that backoff: Redis coming back is noticed within about 2 s."""

    publish_interval_ms: int = 1000
    """How often a node writes its weights and their inputs to Redis (``cp:weights:<node>``).
    1 s keeps ``redis-cli`` and ``proxy list`` current at one pipelined write per second."""

    node_ttl_ms: int = 10_000
    """Expiry of a node's published weights: a stopped node's table disappears after 10 s."""

    # --- SIP transaction timers and failover ---------------------------------------------------
    fr_timer_ms: int = 1500
    """How long to wait for the first reply of a proxy before giving up on it and failing over.
    A live proxy on a LAN answers an INVITE with 100 Trying within milliseconds, so 1.5 s is
    far above normal and bounds what a dead proxy costs a caller (SIP's own 32 s would not).
    It is also the timeout of probes."""

    fr_inv_timer_ms: int = 120_000
    """After a provisional reply, how long an INVITE may ring before it times out: 2 minutes,
    the usual ringing limit; a ringing call is not a failed proxy."""

    progress_timeout_ms: int = 0
    """After a proxy's 100 Trying, how long an INVITE may wait for a ringing (18x) or final
    reply before it is cancelled there and retried on another proxy; the first 18x gives it
    ``fr_inv_timer_ms`` again. 0 (default): off, as in Kamailio, because a callee path with a
    long post-dial delay (a PSTN gateway behind the proxy, 5-10 s before its 183) would be
    cancelled and called again through another proxy. On, it saves the calls a proxy took
    (100 Trying) and then lost by dying: otherwise tm waits ``fr_inv_timer_ms`` for them
    (Kamailio 5.6 cannot end one branch early from outside: a CANCEL to a dead proxy still
    waits for its 487). 5000 saved them in the biggest proxy's kill (README Benchmarks)."""

    in_dialog_fr_timer_ms: int = 30_000
    """How long an in-dialog request (BYE, re-INVITE...) waits for the proxy in its route set
    before the balancer answers 408. There is no other proxy to try, so the short failover
    timer would only turn a proxy that is slow for a moment into a failed hang-up; 30 s is
    tm's own default, close to RFC 3261's Timer F (32 s)."""

    max_attempts: int = 3
    """Proxies tried per request: the first choice plus two failovers. With a third of the pool
    dead and independent picks, 3 attempts leave (1/3)^3 = 3.7 % of requests needing more, and
    those picks avoid proxies already marked down, so in practice none do."""

    # --- Weight policy ------------------------------------------------------------------------
    latency_rise_tau_ms: int = 300
    """Time constant of the latency estimate when latency goes up: a proxy that turns slow
    loses most of its share in under a second."""

    latency_fall_tau_ms: int = 2000
    """Time constant when latency goes down: a recovering proxy regains share over a few
    seconds, so a proxy that flaps does not make the split oscillate."""

    latency_offset_ms: float = 10.0
    """Added to every latency before weights compare them. Differences well below 10 ms are
    scheduling noise on a LAN; with it, 1 ms vs 2 ms changes a weight by 8 %, while a proxy
    100 ms slower than its peers gets 11/110 = 1/10 of their weight."""

    failure_penalty_ms: float = 500.0
    """Latency charged for a failed request (408, 5xx, timeout). Without it a proxy that
    answers everything at once with 503 would look like the fastest one; with it, a proxy
    failing 10 % of requests in 2 ms otherwise averages ~52 ms and drops to about 1/5 share."""

    down_after_failures: int = 3
    """Consecutive failures (requests or probes, with no success between) that mark a proxy
    down. 3 rides out one lost UDP packet or one overloaded moment without flapping."""

    up_after_probes: int = 2
    """Consecutive answered probes that bring a down proxy back (into slow start)."""

    slow_start_ms: int = 8000
    """How long a returning or newly added proxy takes to ramp from ``slow_start_floor`` to
    its full weight, so a proxy that just restarted is not flooded with every new call."""

    slow_start_floor: float = 0.1
    """Fraction of its weight a proxy gets at the start of slow start."""

    # --- Probes -------------------------------------------------------------------------------
    probe_interval_ms: int = 1000
    """Every proxy, up or down, is sent an OPTIONS this often; a proxy that stopped answering is
    marked down within ``down_after_failures`` probe periods even with no traffic."""

    down_probe_interval_ms: int = 200
    """A proxy that is down is probed this often instead (Envoy's ``unhealthy_interval``): a
    restarted proxy is back ``up_after_probes`` answers later, 0.4 s, instead of 2 s, while
    the rest of the pool may be carrying its load beyond capacity (a 5 s death of the
    biggest proxy left a backlog that grew by 19 calls each second it stayed out). The sync
    loop sends probes on its ticks (200 ms), so shorter is the same; 5 OPTIONS a second to
    a proxy that is not answering cost nothing."""

    probe_from_uri: str = "sip:counterpoise@localhost"
    """From URI of probe requests."""

    probe_method: ProbeMethod = ProbeMethod.OPTIONS
    """``OPTIONS`` or ``INVITE``. An INVITE probe goes to ``probe_invite_user`` at the proxy and
    takes the proxy's real call path up to its answer, so it measures what a call would wait;
    the proxy must answer it itself (``downstream/README.md``), and a 2xx is ACKed and BYEd."""

    probe_contact_uri: str = ""
    """Contact of INVITE probes: where the proxy would send requests within the probe's short
    dialog. Empty means ``probe_from_uri``; ``counterpoise up`` (and the tests) set it to
    ``sip:counterpoise@<listen address>``, the balancer itself."""

    probe_invite_user: str = "counterpoise-probe"
    """Request-URI user of INVITE probes: the name a downstream recognises and answers without
    forwarding, so a probe never rings a phone."""

    # --- Load reported by the proxies -----------------------------------------------------------
    load_blackout_ms: int = 2000
    """A proxy's load reports (agent, or ``X-CP-Load`` in its replies) count only once they
    have arrived without a gap for this long, as gRPC's weighted round robin does (its default
    is 10 s): the first samples after an agent or proxy starts are the least settled. Two agent
    intervals."""

    load_expiry_ms: int = 3000
    """A load report not renewed for this long no longer counts, and the next one starts a new
    blackout: a dead agent cannot freeze a weight. Three agent intervals, the agent's own key
    expiry, so one late report does not drop a live proxy's load."""

    load_smoothing_tau_ms: int = 3000
    """Time constant of the moving average of each load source (and of each proxy's completed
    requests per second). A report is a point sample of small integers (1 of 2 workers busy
    reads 50 %, the next 0 %), and the load steers the split only slowly: the in-flight
    comparison and the latency estimate react within the second. 3 s reaches 63 % of a step in
    3 s. At 1 s the load and the split chased each other (a proxy's load fell, its share
    rose, its queue grew, its load rose): steady p99 was 380-676 ms over six alternating runs
    against 384-424 ms at 3 s (oracle 364-380; README Benchmarks). Those runs read
    ``X-CP-Load``'s ``active``; its ``busy``, a 1 s average itself, was measured at 3 s only."""

    load_headroom_floor: float = 0.05
    """Smallest headroom (1 - utilisation) the policy uses. A proxy reporting 100 % keeps 5 % of
    the weight of an idle peer rather than 0: it still gets the odd request, so its latency
    and its load stay measured, and a fully loaded pool still routes by the other inputs."""

    # --- Location server (core/location.py) -------------------------------------------------
    location_server: bool = True
    """On (``on``, ``true``, ``yes`` or ``1`` in the environment) or off. On: REGISTER 2xx
    replies are recorded (AOR -> proxy), requests for a recorded or pinned user go to its
    proxy, INVITE dialogs are recorded. Off: every initial
    request is routed by weight alone and the SIP workers never touch Redis (the 404s of users
    registered at another proxy are then the caller's)."""

    location_fallback: Fallback = Fallback.WEIGHT
    """What a request for a recorded user does when that user's proxy is down, drained or out
    of the pool: ``weight`` routes it by weight like an unrecorded one (never worse than having
    no location server; completes the call when the proxies share a location database),
    ``reject`` answers 480 "Holder Proxy Unavailable" (for proxies with private location
    tables, where any other proxy would answer 404). A REGISTER always falls back by weight,
    so the user re-registers elsewhere and the record moves with it."""

    location_redis_timeout_ms: int = 30
    """Bound of one Redis round trip made by a SIP worker (a lookup, or writing a
    registration record; dialog records are written by the timer process). A LAN round trip
    is well under 1 ms; 30 ms caps what a hung Redis costs one call, and the
    backoff (``redis_backoff_*``) makes the following calls skip Redis until it is retried."""

    dialog_record_ttl_ms: int = 7_200_000
    """Lifetime of a dialog record (Call-ID -> proxy) when no BYE through the balancer deletes
    it: 2 hours, longer than nearly every call, short enough that records of dialogs whose BYE
    never came (a crashed phone) do not pile up in Redis. 0 records no dialog, which saves
    the two Redis round trips per call (write on the 2xx, delete on the BYE) where every peer
    keeps its route set."""

    # --- Redis: persistence and credentials (issue 11) ---
    redis_data_dir: str = ""
    """Folder of the embedded Redis's data (append-only file) and log. Empty: one fixed folder,
    ``/var/lib/counterpoise/redis`` when run as root, else ``$XDG_STATE_HOME/counterpoise/redis``
    (``~/.local/state/...``), so a restart of ``counterpoise up`` finds the operator's pool."""

    redis_password_file: str = ""
    """File holding the Redis password (first line) when the URL carries none: the password
    is then neither a process argument (``ps`` shows those to every user) nor in the URL that
    is logged. Empty: none, or the embedded Redis's own (``counterpoise up`` generates it)."""

    # --- Running the node (issue 12) ---------------------------------------------------------
    # Read by ``counterpoise up`` to start Kamailio (its command line); the KEMI code ignores
    # them. Each has an ``up`` option of the same name that overrides it.
    listen: str = "udp:127.0.0.1:5060"
    """The balancer's SIP sockets, comma-separated, in Kamailio's form ``PROTO:HOST:PORT``
    (``udp``, ``tcp``, ``tls``; IPv6 in brackets: ``tcp:[::1]:5060``; a bare ``HOST:PORT`` is
    UDP). Loopback by default, so a first ``counterpoise up`` exposes nothing."""

    advertise: str = ""
    """``HOST[:PORT]`` written in Via and Record-Route instead of the sockets' own address, for
    a node behind NAT; empty: the socket's address."""

    workers: int = 4
    """SIP worker processes per UDP socket, and TCP workers in all (Kamailio's ``-n``): 4 is
    twice the cores of the machine the project is tested on, so a worker waiting on a Redis
    lookup (location server) leaves another to run; raise it with the cores."""

    shm_mb: int = 64
    """Kamailio's shared memory (``-m``), Kamailio's own default. It holds transactions and
    the htables; the benchmark ran out of 64 MB near 600 calls/s and used 512 MB."""

    run_dir: str = ""
    """Folder of Kamailio's pid file and control sockets (``<run_dir>/kamailio_ctl``,
    ``kamailio_rpc.sock``). Empty: ``/run/counterpoise`` as root, else
    ``$XDG_RUNTIME_DIR/counterpoise`` (or ``/tmp/counterpoise-<uid>``)."""

    user: str = ""
    """User Kamailio's processes run as after binding the sockets (``-u``); empty: the user
    running ``up``. The run folder is handed to this user, and a copy of the Redis password
    file made in it for this user alone."""

    group: str = ""
    """Group of Kamailio's processes (``-g``); empty: the user's primary group."""

    log_file: str = ""
    """File Kamailio logs to; empty: ``up``'s own stderr (the journal under systemd)."""

    tls_certificate: str = ""
    """PEM certificate (chain) of the ``tls`` sockets, also shown to proxies reached over TLS;
    required when a ``tls`` socket is listed."""

    tls_private_key: str = ""
    """PEM private key of ``tls_certificate``."""

    # --- Monitoring (issue 13) -------------------------------------------------------------
    metrics_listen: str = ""
    """``HOST:PORT`` of the node's Prometheus endpoint (``GET /metrics``), served by its timer
    process between sync ticks; empty (the default) serves none. ``counterpoise up
    --metrics`` sets it. Off by default: an open port is an operator's decision."""

    # --- Overload versus death, retry budget, recovery (issue 14) ---
    max_ejected_fraction: float = 0.5
    """Most of the pool's capacity (the base weights of its active proxies) that may be
    ``down`` at once for failed requests while the proxy still answers its probes (as
    Envoy's ``max_ejection_percent``): beyond it a proxy stays in, weighted down by its
    latency, and the refusal is counted. One proxy may always be ejected, however big. A
    proxy that also misses its probes is dead, and is never kept in by this cap. 0.5: a pool
    that lost half its capacity to ejections is more likely overloaded than half broken, and
    ejecting more would overload the rest further (a cascade)."""

    retry_budget_fraction: float = 0.2
    """Failover retries a node may spend, as a fraction of the requests it relayed in the
    last ``retry_budget_window_ms`` (Finagle's default 20 %): a dead proxy's share is
    retried, while retries cannot multiply an overload. Beyond it, a request whose proxy
    failed gets the failure as its answer (``408`` on a timeout) instead of another proxy."""

    retry_budget_floor_per_s: float = 2.0
    """Retries per second allowed on top of the fraction, so a node with little traffic can
    still fail over every request of a dead proxy: at 2 calls/s, a third of them on a dead
    proxy is 0.7 retries/s."""

    retry_budget_window_ms: int = 10_000
    """How far back the retry budget counts requests and retries (Finagle's 10 s): long
    enough that a dead proxy's burst of timeouts (all its requests of one ``fr_timer_ms``)
    fits in a budget saved over seconds of normal traffic."""

    slow_start_after_down_ms: int = 30_000
    """A proxy down for longer than this comes back through slow start, like a new one (it
    may have restarted cold). One down for less (a stall, a quick restart) returns ``up`` at
    once with the latency estimate it had before its failures, and takes its share back as
    its real latency and in-flight count allow: a fixed ramp would leave the rest of the
    pool overloaded for seconds. 30 s: longer than any stall the benchmarks or a GC pause
    produce, short enough that a proxy restarted after maintenance ramps."""

    saturated_fr_timer_ms: int = 6000
    """``fr_timer_ms`` of requests relayed to a proxy with a long queue (it answered something
    within ``fr_timer_ms``, and timed out requests within ``saturated_memory_ms`` or its
    expected first reply is past a third of ``fr_timer_ms``: ``policy.first_reply_timeout_ms``):
    its queue, not death, delays its first reply, and giving up at 1.5 s would only retry
    the request on a proxy as busy while the first one still does the work (a retry storm
    wastes what capacity is left). 6 s: above
    the 4-5 s queue the benchmark's biggest-proxy kill (5 s) builds on the rest of the pool
    (with 4 s its smallest proxy timed out its queue and the retries ran over budget),
    below a caller's patience (SIPp's 10 s, RFC 3261's Timer B 32 s); callers do not
    retransmit meanwhile, since the balancer answers 100 Trying at once. A proxy with a long
    queue that dies keeps its requests waiting up to this, but its silence gives its new
    requests the short timer at once."""

    saturated_memory_ms: int = 2000
    """A proxy whose request failed within this long (a timeout, while it still answers
    something) counts as saturated: when every other usable proxy is saturated, a proxy in
    slow start gets its full weight at once, since ramping it would only leave the others
    overloaded longer. 2 s: two probe periods."""

    silent_after_ms: int = 300
    """A proxy that has said nothing at all (no reply, no probe answer) for this long while
    new requests went to it gets no new requests while another usable proxy is heard: a
    live proxy answers a new request within milliseconds (100 Trying), and a saturated one
    still answers the requests it takes up, so 300 ms of silence (a sync tick and a half)
    is a freeze or a death. Weighing it by its silence alone kept a third of the calls going
    to a frozen proxy that held half the pool (its silence was no longer than the others'
    queues) for the whole 1.5 s until its first timeout, and each of those calls waited
    that long before its retry joined the queues. Not ``down``: no failure is counted and no
    ejection, its in-flight requests keep their timer, and its first reply of any kind
    brings it back with its estimate. 0: off (silence only counts as latency)."""

    hold_queue_ms: int = 500
    """When every proxy with a weight is queueing this long (its in-flight count over its
    completed requests per second: its limit is ``throughput * hold_queue_ms``), new
    requests wait at the balancer, in order, instead of in the proxies' socket queues, and
    each goes to the first proxy with room (``core.hold``; HAProxy's ``maxconn`` with a
    queue). Sent on arrival, the calls beyond the pool's capacity sat in the queues they
    were sent to while a proxy back from a stall or a restart was idle, and the callee's
    200s and the BYEs' answers queued behind them. 500 ms: in development runs of the
    benchmark's biggest-proxy stall and kill, p99* 2.0-2.2 s and 2.5 s, against 2.4-3.1 s
    and 3.4-3.7 s with 1000 ms; at 95 % of capacity a few requests are held (35 of 998 in
    one run) with p99 unchanged, and steady load at 70 % holds none. 0: off (every request
    is relayed on arrival)."""

    hold_max_ms: int = 4000
    """A request held this long is relayed to the proxy with the least in flight per unit of
    weight, room or not: holding must never cost a call. 4 s: longer than the backlog of
    the benchmark's biggest-proxy kill takes to drain once it is back (about 2 s), well
    within a caller's patience (SIPp's 10 s, Timer B's 32 s)."""

    # --- The untrusted edge (issue 10) -----------------------------------------------------
    flood_requests_per_s: int = 1000
    """Requests one source IP may send per second (fixed 1 s windows) before it is banned;
    0 = no limit. Checked before any other work, Redis lookups included. A phone sends well
    under 1 request/s; 1000 lets one upstream SBC or trunk relay about 300 calls/s (INVITE,
    ACK, BYE) from one address. The pool's proxies are never limited."""

    flood_registers_per_s: int = 50
    """REGISTERs one source IP may send per second before it is banned (0 = no limit):
    stricter, since every REGISTER costs a Redis round trip and scanners (svwar) guess
    extensions with them. 1000 phones behind one NAT refreshing every 60 s send 17/s."""

    flood_ban_ms: int = 60_000
    """How long a source that broke a limit is ignored (no reply, no work): a minute makes
    a flood cost the balancer two shared-memory lookups per packet, and a phone that burst by
    mistake is back within a minute."""

    record_call_id_max_chars: int = 256
    """Longest Call-ID written into a dialog record (shared memory and Redis, kept up to
    ``dialog_record_ttl_ms``). Phones use 20 to 80 characters; a longer one is routed by its
    route set alone and never recorded, so 60 KB Call-IDs cannot fill memory."""

    record_tag_max_chars: int = 128
    """Longest From/To tag written into a dialog record; longer: not recorded (as above).
    Tags are 8 to 40 characters in practice."""

    record_aor_max_chars: int = 256
    """Longest address-of-record (user@host) looked up or recorded; a longer one is routed by
    weight, and neither costs a Redis round trip nor becomes a Redis key."""

    dialog_queue_max_bytes: int = 8_000_000
    """Bytes of dialog record writes kept queued for Redis (key and value of every entry).
    A write is under 800 bytes with the length limits above, so 8 MB holds about 10,000:
    at 100 calls/s (two writes a call) close to a minute of Redis outage, and an eighth of
    Kamailio's default 64 MB of shared memory. Beyond it the oldest are dropped and counted."""

    sip_signature: str = ""
    """The ``Server`` header of replies the balancer makes itself and the ``User-Agent`` of
    its own requests (probes). Empty (default): neither is sent (``server_signature=no``),
    since a product and version string tells a scanner which exploits to try."""

    # --- Cost per call (issue 15) -------------------------------------------------------------
    location_cache_ms: int = 1000
    """How long a node keeps a location lookup's answer (holder or none) in its shared memory,
    so further calls to that user cost no Redis round trip. A registration, unregistration or
    pin made through another node or the CLI is followed within this long; this node's own
    REGISTERs at once (their 2xx drops the entry). 1 s: users re-register every few minutes
    to an hour, so the lag is nothing next to that, and a user called once a second or more
    costs one lookup a second. 0 turns the cache off; at most 10 000 (kamailio.cfg expires the
    entries of htable ``cplocc`` after 10 s)."""

    def __post_init__(self) -> None:
        """Check every value; raise ``SettingError`` naming the first bad one."""
        for field in dataclasses.fields(self):
            value, kind = getattr(self, field.name), type(field.default)
            if issubclass(kind, enum.Enum) and value not in tuple(kind):
                raise SettingError(field.name, value, f"expected {_choices(kind)}")
            if field.name in POSITIVE and not value > 0:
                raise SettingError(field.name, value, "must be > 0")
            if field.name in NOT_NEGATIVE and not value >= 0:
                raise SettingError(field.name, value, "must be >= 0")
            if field.name in FRACTIONS and not 0 <= value <= 1:
                raise SettingError(field.name, value, "expected 0..1")
            if field.name in NOT_EMPTY and not value:
                raise SettingError(field.name, value, "must not be empty")
            if field.name in ADDRESSES and value and host_port(value) is None:
                raise SettingError(field.name, value, "expected HOST:PORT or empty")
            if field.name in HEADER_VALUES and not HEADER_VALUE.fullmatch(value):
                raise SettingError(field.name, value, "printable ASCII without quotes")
        if self.location_cache_ms > LOCATION_CACHE_MAX_MS:
            raise SettingError(
                "location_cache_ms", self.location_cache_ms, f"must be <= {LOCATION_CACHE_MAX_MS}"
            )
        self._check_sockets()

    def _check_sockets(self) -> None:
        try:
            listening = sockets.parse_sockets(self.listen)
        except sockets.InvalidSocket as error:
            raise SettingError("listen", self.listen, str(error)) from None
        if self.advertise:
            try:
                sockets.parse_advertise(self.advertise)
            except sockets.InvalidSocket as error:
                raise SettingError("advertise", self.advertise, str(error)) from None
        tls = any(socket.proto == "tls" for socket in listening)
        if tls and not (self.tls_certificate and self.tls_private_key):
            raise SettingError(
                "tls_certificate", self.tls_certificate, "a tls socket needs a certificate and key"
            )

    def listen_sockets(self) -> tuple[sockets.ListenSocket, ...]:
        """The ``listen`` sockets, parsed (checked when the settings were made)."""
        return sockets.parse_sockets(self.listen)

    def node_name(self) -> str:
        """This node's identity in Redis."""
        return self.node_id or os.uname().nodename


CONFIG_ENV = "COUNTERPOISE_CONFIG"
"""Names the config file; set but empty: no file (``to_environ`` sets it so for the
Kamailio processes, whose environment already holds every value)."""

DEFAULT_CONFIG = "/etc/counterpoise/counterpoise.toml"
"""Read when it exists and ``COUNTERPOISE_CONFIG`` is not set."""


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from the defaults, then the config file, then the ``COUNTERPOISE_*``
    variables of ``environ`` (each layer wins over the one before).

    The file is TOML, one ``name = value`` per setting at the top level (``fr_timer_ms =
    800``, ``listen = "udp:10.0.0.2:5060,tcp:10.0.0.2:5060"``): ``COUNTERPOISE_CONFIG`` names
    it, else ``/etc/counterpoise/counterpoise.toml`` is read if it exists. An unknown name in
    the file or the environment, a value that does not parse as the field's type, or one out
    of range raises ``SettingError`` naming where it came from, so a typo stops the start-up
    with a clear message instead of running on a default.
    """
    env = os.environ if environ is None else environ
    given = file_values(env)  # name -> (where, value)
    _reject_unknown(
        (name[len(ENV_PREFIX) :].lower(), name)
        for name in env
        if name.startswith(ENV_PREFIX) and name != CONFIG_ENV
    )
    for field in dataclasses.fields(Settings):
        name = ENV_PREFIX + field.name.upper()
        if name in env:
            value = parse_value(field.name, type(field.default), env[name], name)
            given[field.name] = (name, value)
    try:
        return Settings(**{field: value for field, (_, value) in given.items()})
    except SettingError as error:
        where, value = given[error.name]
        raise SettingError(where, value, error.reason) from None


def file_values(env: Mapping[str, str]) -> dict[str, tuple[str, object]]:
    """The config file's settings, each with where it was written (``FILE: name``)."""
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
    _reject_unknown((name, f"{path}: {name}") for name in table)
    kinds = {field.name: type(field.default) for field in dataclasses.fields(Settings)}
    return {
        name: (f"{path}: {name}", _typed(name, kinds[name], value, f"{path}: {name}"))
        for name, value in table.items()
    }


def _reject_unknown(names: Iterable[tuple[str, str]]) -> None:
    """``SettingError`` for the first ``(setting name, where)`` that is no setting."""
    known = {field.name for field in dataclasses.fields(Settings)}
    for name, where in names:
        if name not in known:
            raise SettingError(where, name, f"unknown setting; valid: {', '.join(sorted(known))}")


def _typed(field: str, kind: type, value: object, where: str) -> object:
    """A TOML value as the setting's type: the matching TOML type, or a string parsed as an
    environment variable would be (``"on"``, ``"INVITE"``)."""
    if isinstance(value, str) and kind is not str:
        return parse_value(field, kind, value, where)
    if kind is bool:
        matches = isinstance(value, bool)
    elif kind is float:
        matches = isinstance(value, int | float) and not isinstance(value, bool)
    else:  # TOML's true is no int
        matches = isinstance(value, kind) and not isinstance(value, bool)
    if not matches:
        raise SettingError(where, value, f"expected a {kind.__name__}")
    return kind(value)


def parse_value(field: str, kind: type, raw: str, name: str | None = None) -> object:
    """``raw`` as a value of a setting's type, or ``SettingError`` naming where it came from
    (``name``, by default its variable)."""
    name = name or ENV_PREFIX + field.upper()
    if kind is bool:
        if raw.lower() in TRUE_WORDS + FALSE_WORDS:
            return raw.lower() in TRUE_WORDS
        raise SettingError(name, raw, "expected on or off")
    if issubclass(kind, enum.Enum):
        for member in kind:
            if raw.lower() == str(member).lower():
                return member
        raise SettingError(name, raw, f"expected {_choices(kind)}")
    try:
        return kind(raw)
    except ValueError:
        raise SettingError(name, raw, f"not a valid {kind.__name__}") from None


def _choices(kind: type[enum.Enum]) -> str:
    return " or ".join(str(member) for member in kind)


def to_environ(settings: Settings) -> dict[str, str]:
    """The ``COUNTERPOISE_*`` variables that reproduce ``settings`` in another process (with
    no config file: they hold every value)."""
    return {
        CONFIG_ENV: "",
        **{
            ENV_PREFIX + field.name.upper(): _text(getattr(settings, field.name))
            for field in dataclasses.fields(Settings)
        },
    }


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


POSITIVE = (
    "redis_timeout_ms",
    "redis_backoff_initial_ms",
    "redis_backoff_max_ms",
    "publish_interval_ms",
    "node_ttl_ms",
    "fr_timer_ms",
    "fr_inv_timer_ms",
    "in_dialog_fr_timer_ms",
    "max_attempts",
    "latency_rise_tau_ms",
    "latency_fall_tau_ms",
    "latency_offset_ms",
    "failure_penalty_ms",
    "down_after_failures",
    "up_after_probes",
    "probe_interval_ms",
    "down_probe_interval_ms",
    "load_expiry_ms",
    "load_smoothing_tau_ms",
    "location_redis_timeout_ms",
    "workers",
    "shm_mb",
    "retry_budget_window_ms",
    "saturated_fr_timer_ms",
    "hold_max_ms",
    "flood_ban_ms",
    "record_call_id_max_chars",
    "record_tag_max_chars",
    "record_aor_max_chars",
    "dialog_queue_max_bytes",
)
"""Settings that must be > 0: durations a timer or a division relies on, and counts."""
NOT_NEGATIVE = (
    "slow_start_ms",
    "load_blackout_ms",
    "dialog_record_ttl_ms",
    "retry_budget_floor_per_s",
    "slow_start_after_down_ms",
    "saturated_memory_ms",
    "silent_after_ms",
    "progress_timeout_ms",
    "hold_queue_ms",
    "flood_requests_per_s",
    "flood_registers_per_s",
    "location_cache_ms",
)
"""Settings where 0 means "none" (no ramp, no blackout, no dialog records, no retry floor,
every return through slow start, no proxy counted saturated, no silent proxy set aside, no
progress timeout, no request held, no flood limit, no location cache)."""
LOCATION_CACHE_MAX_MS = 10_000
"""The htable ``cplocc`` (kamailio.cfg) drops its entries after 10 s: a longer cache would
be cut short by it."""
FRACTIONS = (
    "slow_start_floor",
    "load_headroom_floor",
    "max_ejected_fraction",
    "retry_budget_fraction",
)
"""Settings that are fractions, 0..1."""
NOT_EMPTY = ("redis_url", "key_prefix")

RUNTIME = (
    "fr_timer_ms",
    "fr_inv_timer_ms",
    "progress_timeout_ms",
    "in_dialog_fr_timer_ms",
    "max_attempts",
    "failure_penalty_ms",
    "latency_rise_tau_ms",
    "latency_fall_tau_ms",
    "latency_offset_ms",
    "down_after_failures",
    "up_after_probes",
    "slow_start_ms",
    "slow_start_floor",
    "load_headroom_floor",
    "probe_interval_ms",
    "down_probe_interval_ms",
    "publish_interval_ms",
    "node_ttl_ms",
)
"""Settings that change without a restart (``counterpoise up`` re-reads its config file on
SIGHUP): the SIP workers read them per request, the sync loop per tick. Every other one is
built into something at start-up (Redis connections and their timeouts and backoff, the
probe sender, the location server's stores and tables, the load book, Kamailio's command
line, tm's default timer, which times probes), so a change of it waits for a restart."""


def runtime_changes(old: Settings, new: Settings) -> tuple[dict[str, str], list[str]]:
    """What differs from ``old`` to ``new``: the ``RUNTIME`` settings with their new values as
    text (``with_runtime`` takes them), and the names of the others (they need a restart)."""
    changed = [
        f.name for f in dataclasses.fields(Settings) if getattr(old, f.name) != getattr(new, f.name)
    ]
    runtime = {name: _text(getattr(new, name)) for name in changed if name in RUNTIME}
    return runtime, [name for name in changed if name not in RUNTIME]


def runtime_values(settings: Settings) -> dict[str, str]:
    """Every ``RUNTIME`` setting of ``settings`` as text: what ``up`` pushes on SIGHUP (all of
    them, so a value set back to its start-up one is pushed too)."""
    return {name: _text(getattr(settings, name)) for name in RUNTIME}


def with_runtime(settings: Settings, changes: Mapping[str, str]) -> Settings:
    """``settings`` with ``changes`` (``runtime_changes``'s text values) applied and checked;
    ``SettingError`` for a name outside ``RUNTIME`` or a bad value."""
    values = {}
    for name, text in changes.items():
        if name not in RUNTIME:
            raise SettingError(name, text, "not changeable at runtime")
        values[name] = parse_value(name, type(getattr(Settings, name)), text, name)
    return dataclasses.replace(settings, **values)


ADDRESSES = ("metrics_listen",)
"""Settings that are empty (off) or ``HOST:PORT``."""


def host_port(text: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``HOST:PORT`` (``[::1]:PORT`` for IPv6), None if malformed."""
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        return None
    return host, int(port)


HEADER_VALUES = ("sip_signature",)
"""Settings that become a SIP header value in kamailio.cfg: no line breaks or quotes."""
HEADER_VALUE = re.compile(r"[ !#-~]*")
