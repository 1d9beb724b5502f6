"""The one way to reach Redis: a client whose every call is bounded in time.

``--redis`` / ``COUNTERPOISE_REDIS_URL`` takes every URL redis-py's ``Redis.from_url`` takes,
with its query parameters (``redis://``, ``rediss://host:port/0?ssl_ca_certs=/path/ca.crt``,
``unix:///run/redis.sock?db=0``), and one more scheme for Redis Sentinel:

    redis+sentinel://[user:password@]host:port[,host:port...]/<service>[/db]

which asks the sentinels for the master of ``<service>`` on every new connection, so a client
follows a failover without a restart (the credentials are the master's; the sentinels are
asked without any). ``rediss+sentinel://`` does the same with TLS to the master, with the
same query parameters as ``rediss://``.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from typing import Any, Self

import redis
import redis.sentinel

from counterpoise.store.keys import Keys

ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, OSError, ValueError)
"""What a store call may raise when Redis is down, slow or holds garbage; every one means
"carry on with what we had"."""

SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}
"""Sentinel URL schemes, and whether the master is reached over TLS."""


def connect(
    url: str, timeout_ms: int, decode: bool = True, password_file: str = ""
) -> redis.Redis[Any]:
    """A client whose every call returns or fails within ``timeout_ms`` (connect and read).
    ``decode=False`` returns bytes (msgpack reports, records checked before decoding).
    ``password_file``'s first line is the password when the URL has none (so it is never a
    process argument)."""
    password = read_password(password_file)
    seconds = timeout_ms / 1000.0
    options: dict[str, Any] = {
        "socket_timeout": seconds,
        "socket_connect_timeout": seconds,
        "decode_responses": decode,
        "health_check_interval": 0,
    }
    scheme = url.partition("://")[0].lower()
    if scheme == "unix":
        del options["socket_connect_timeout"]  # redis-py's unix connections do not take it
    if scheme in SENTINEL_SCHEMES:
        return _sentinel_master(url, SENTINEL_SCHEMES[scheme], password, options)
    if password and not urllib.parse.urlsplit(url).password:
        options["password"] = password
    client: redis.Redis[Any] = redis.Redis.from_url(url, **options)
    return client


def read_password(path: str) -> str:
    """The first line of ``path`` (empty path: no password)."""
    if not path:
        return ""
    with open(path, encoding="utf-8") as file:
        return file.readline().strip()


def _sentinel_master(
    url: str, tls: bool, password: str, options: dict[str, Any]
) -> redis.Redis[Any]:
    # By hand: urllib refuses a host list with an IPv6 address in it.
    rest, _, query = url.partition("://")[2].partition("?")
    netloc, _, path_text = rest.partition("/")
    userinfo, _, hosts = netloc.rpartition("@")
    user, _, secret = userinfo.partition(":")
    path = [p for p in path_text.split("/") if p]
    if not hosts or not 1 <= len(path) <= 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError(
            f"{redact(url)}: expected redis+sentinel://[user:password@]host:port[,host:port...]"
            "/<service>[/db]"
        )
    sentinels = [_host_port(item, url) for item in hosts.split(",")]
    # The query's parameters (ssl_ca_certs=...) apply to the master, as in a rediss:// URL.
    params = redis.connection.parse_url(f"{'rediss' if tls else 'redis'}://x/?{query}")
    params.pop("host", None)
    extra = {**params, **options}
    if tls:
        extra["connection_class"] = redis.sentinel.SentinelManagedSSLConnection
    if user:
        extra["username"] = urllib.parse.unquote(user)
    if secret or password:
        extra["password"] = urllib.parse.unquote(secret) if secret else password
    sentinel_options = {
        "socket_timeout": options["socket_timeout"],
        "socket_connect_timeout": options["socket_connect_timeout"],
    }
    manager = redis.sentinel.Sentinel(sentinels, sentinel_kwargs=sentinel_options)
    db = int(path[1]) if len(path) == 2 else 0
    return manager.master_for(urllib.parse.unquote(path[0]), db=db, **extra)


def _host_port(text: str, url: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"{redact(url)}: {text!r} is not host:port")
    return host.strip("[]"), int(port)


def bytes_twin(client: redis.Redis[Any]) -> redis.Redis[bytes]:
    """A client that returns bytes, connected exactly as ``client`` is (same connection class:
    TLS, unix socket, Sentinel; same credentials and timeouts)."""
    pool = client.connection_pool
    kwargs = {k: v for k, v in pool.connection_kwargs.items() if k != "connection_pool"}
    kwargs |= {"decode_responses": False, "connection_class": pool.connection_class}
    twin: redis.ConnectionPool
    if isinstance(pool, redis.sentinel.SentinelConnectionPool):
        twin = redis.sentinel.SentinelConnectionPool(
            pool.service_name, pool.sentinel_manager, is_master=pool.is_master, **kwargs
        )
    else:
        twin = redis.ConnectionPool(**kwargs)
    return redis.Redis(connection_pool=twin)


def redact(url: str) -> str:
    """``url`` with its passwords (user info, ``password=`` parameters) replaced by ``***``:
    what may be printed or logged."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    rest, mark, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:***@{hosts}"
    params = [
        (f"{k}=***" if "password" in k.lower() else f"{k}{eq}{v}")
        for k, eq, v in (item.partition("=") for item in query.split("&") if item)
    ]
    return f"{scheme}://{netloc}{slash}{path}{mark}{'&'.join(params)}"


class Store:
    """Base of the stores: one client, its bytes twin, one key schema, opened one way."""

    def __init__(self, client: redis.Redis[Any], prefix: str) -> None:
        self.client = client
        self.raw = bytes_twin(client)
        """Reads of records that are checked before they are decoded (``core.untrusted``):
        a value that is not UTF-8 is then one bad record, not a failed read of all of them."""
        self.keys = Keys(prefix)

    @classmethod
    def open(cls, url: str, prefix: str, timeout_ms: int, password_file: str = "") -> Self:
        """A store on a new connection to ``url``, each call bounded by ``timeout_ms``."""
        return cls(connect(url, timeout_ms, password_file=password_file), prefix)

    def ping(self) -> None:
        """Raise one of ``ERRORS`` unless Redis answers."""
        self.client.ping()

    def send_all(self, commands: Sequence[Sequence[str | int]]) -> list[Any]:
        """Send ``commands`` in one write and read their replies, in order: a pipeline
        without redis-py's work per command (it encodes each argument through several calls,
        about two thirds of a pipelined ``SET``'s CPU), for the timer process, which writes
        every call's dialog record. Raises ``ERRORS`` as a pipeline does, after dropping the
        connection: replies left unread would be read as the next call's."""
        payload = pack(commands)  # a value it cannot encode costs no connection
        pool = self.client.connection_pool
        connection = pool.get_connection(RAW_COMMAND)
        try:
            connection.send_packed_command([payload], check_health=False)
            return [connection.read_response() for _ in commands]
        except BaseException:
            connection.disconnect()
            raise
        finally:
            pool.release(connection)


RAW_COMMAND = "SET"
"""The command name ``send_all`` asks its pool's connection for (a pool picks no connection by
it; a Sentinel pool asks for the master whatever it is)."""


def pack(commands: Sequence[Sequence[str | int]]) -> bytes:
    """Commands in the Redis protocol (RESP): each an array of bulk strings, text as UTF-8."""
    parts: list[bytes] = []
    for command in commands:
        parts.append(b"*%d\r\n" % len(command))
        for argument in command:
            data = str(argument).encode()
            parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)
