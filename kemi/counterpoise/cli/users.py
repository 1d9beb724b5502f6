"""``counterpoise agent-user URI --password-file PATH``: an agent's own Redis user.

The user may write the report key of that one proxy and announce on ``cp:reports``, nothing
else (``core.roles.agent_rules``): a compromised agent host cannot add a proxy to the pool or
forge another proxy's report. Needs the administrator (Redis's ``default`` user; the embedded
Redis's is found by itself); the password goes to a new 0600 file for the agent's
``COUNTERPOISE_REDIS_PASSWORD_FILE``, never to the terminal.
"""

from __future__ import annotations

import argparse
import secrets
from pathlib import Path

from counterpoise.cli.common import CliError, open_admin_store
from counterpoise.cli.embedded import PASSWORD_BYTES, write_private
from counterpoise.core.settings import Settings
from counterpoise.core.sipuri import InvalidProxyUri, parse_proxy_uri
from counterpoise.store.acl import add_agent_user
from counterpoise.store.client import ERRORS
from counterpoise.store.pool import PoolStore


def make_agent_user(store: PoolStore, uri: str, password_file: Path) -> str:
    """Create the agent user of ``uri`` with a new password written to ``password_file``;
    returns the user name."""
    password = secrets.token_urlsafe(PASSWORD_BYTES)
    write_private(password_file, password + "\n")
    return add_agent_user(store.client, uri, store.keys.prefix, password)


def cmd_agent_user(args: argparse.Namespace, settings: Settings) -> int:
    try:
        uri = parse_proxy_uri(args.uri)
    except InvalidProxyUri as error:
        raise CliError(str(error)) from None
    store = open_admin_store(settings, args.redis)
    try:
        user = make_agent_user(store, uri, Path(args.password_file))
    except ERRORS as error:
        raise CliError(
            f"Redis error (the administrator, user default, is needed): {error}"
        ) from None
    print(
        f"user {user}: writes {store.keys.report(uri)} and announces on "
        f"{store.keys.reports_channel}, nothing else; password in {args.password_file}"
    )
    print(
        f"run the agent with COUNTERPOISE_REDIS_URL=redis://{user}@HOST:PORT/0 "
        f"COUNTERPOISE_REDIS_PASSWORD_FILE={args.password_file}"
    )
    return 0


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "agent-user", parents=[common], help="a Redis user for one proxy's agent (its key only)"
    )
    parser.add_argument("uri", help="the proxy's URI as in the pool")
    parser.add_argument("--password-file", required=True, help="new 0600 file for the password")
    parser.set_defaults(func=cmd_agent_user)
