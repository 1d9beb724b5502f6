"""What every ``counterpoise`` subcommand shares: its error type (``errors.CliError``) and
opening the stores."""

from __future__ import annotations

from typing import TypeVar

from counterpoise.cli import embedded
from counterpoise.core.roles import ADMIN
from counterpoise.core.settings import Settings
from counterpoise.errors import CliError
from counterpoise.store.client import ERRORS, Store, redact
from counterpoise.store.location import LocationStore
from counterpoise.store.pool import PoolStore

CLI_REDIS_TIMEOUT_MS = 1000
"""Bound of one Redis call of the command-line tool: an operator can wait a second before
being told Redis is unreachable; the timer process's 250 ms would fail on a busy link."""

AnyStore = TypeVar("AnyStore", bound=Store)


def open_store(settings: Settings, url: str | None) -> PoolStore:
    """The pool store on ``url`` (default ``settings.redis.redis_url``), checked to answer."""
    return _open(PoolStore, settings, url)


def open_admin_store(settings: Settings, url: str | None) -> PoolStore:
    """The pool store as the embedded Redis's administrator (to make users), checked to
    answer."""
    return _open(PoolStore, settings, url, role=ADMIN)


def open_location_store(settings: Settings, url: str | None) -> LocationStore:
    """The location store on ``url`` (default ``settings.redis.redis_url``), checked to answer."""
    return _open(LocationStore, settings, url)


def _open(
    kind: type[AnyStore], settings: Settings, url: str | None, role: str = "operator"
) -> AnyStore:
    """``kind`` of store on ``url``; without one, on ``settings.redis.redis_url``, as ``role`` when
    that is the embedded Redis and its password file is readable (``embedded.as_role``)."""
    if url is None:
        settings = embedded.as_role(settings, embedded.data_dir(settings), role)
    url = url or settings.redis.redis_url
    timeout_ms = max(settings.redis.redis_timeout_ms, CLI_REDIS_TIMEOUT_MS)
    store = kind.open(
        url, settings.redis.key_prefix, timeout_ms, settings.redis.redis_password_file
    )
    try:
        store.ping()
    except ERRORS as error:
        raise CliError(f"Redis at {redact(url)} is unreachable: {error}") from None
    return store
