"""``counterpoise dialog-key rotate``: a new key to seal the balancer's Record-Routes.

The nodes sign with the new key from ``dialog_seal.ACTIVATION_DELAY_MS`` after the rotation
(each has loaded it by then) and keep checking with the previous ones: the ring holds
``core.dialog_seal.KEPT_KEYS`` keys, so a call in progress survives two rotations. Needs the
administrator (Redis's ``default`` user; the embedded Redis's is found by itself): no other
role may read the keys.
"""

from __future__ import annotations

import argparse
import secrets

from counterpoise import clock
from counterpoise.cli import embedded
from counterpoise.cli.common import CliError
from counterpoise.core import dialog_seal
from counterpoise.core.roles import ADMIN
from counterpoise.core.settings import Settings
from counterpoise.store.client import ERRORS, redact
from counterpoise.store.dialog_keys import DialogKeyStore

CLI_TIMEOUT_MS = 1000


def cmd_dialog_key(args: argparse.Namespace, settings: Settings) -> int:
    if args.redis is None:
        settings = embedded.as_role(settings, embedded.data_dir(settings), ADMIN)
    url = args.redis or settings.redis.redis_url
    store = DialogKeyStore.open(
        url,
        settings.redis.key_prefix,
        max(settings.redis.redis_timeout_ms, CLI_TIMEOUT_MS),
        settings.redis.redis_password_file,
    )
    active_from_ms = clock.wall_ms() + dialog_seal.ACTIVATION_DELAY_MS
    try:
        key, dropped = store.rotate(secrets.token_bytes(dialog_seal.SECRET_BYTES), active_from_ms)
    except ERRORS as error:
        raise CliError(
            f"Redis at {redact(url)}: {error} (the administrator, user default, is needed)"
        ) from None
    gone = f"; key {', '.join(dropped)} no longer valid" if dropped else ""
    delay_s = dialog_seal.ACTIVATION_DELAY_MS // 1000
    print(
        f"dialog key {key.key_id} made; nodes seal with it in {delay_s} s "
        f"and check the {dialog_seal.KEPT_KEYS - 1} before it too{gone}"
    )
    return 0


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("dialog-key", help="the keys that seal the balancer's dialogs")
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("rotate", parents=[common], help="a new key; calls in progress keep working")
    parser.set_defaults(func=cmd_dialog_key)
