"""Who may do what in Redis: the roles of ``redis/users.acl`` and an agent's own user.

Pure: renders ACL rules as text; ``cli/credentials.py`` makes the passwords and files, and
``store/acl.py`` sends an agent's user to Redis.
"""

from __future__ import annotations

import hashlib
import re

ADMIN = "default"
"""The administrator is Redis's ``default`` user, with a password (``redis/users.acl`` says
why it cannot be off)."""
ROLES = (ADMIN, "balancer", "operator", "viewer")
"""The users of ``redis/users.acl``."""

AGENT_COMMANDS = "-@all +set +publish +multi +exec +discard +ping"
"""What an agent sends: its report (``SET`` with ``PX``) and its announcement, in one
``MULTI``/``EXEC`` (``PoolStore.put_report``)."""


def password_hash(password: str) -> str:
    """What an ACL rule stores instead of the password (``#<sha256 hex>``)."""
    return hashlib.sha256(password.encode()).hexdigest()


def render_acl(template: str, prefix: str, passwords: dict[str, str]) -> str:
    """``redis/users.acl`` with the key prefix and each role's password hash filled in (comment
    lines dropped: Redis's aclfile accepts none)."""
    values = {"prefix": _glob_escape(prefix)} | {r: password_hash(p) for r, p in passwords.items()}
    lines = [line for line in template.splitlines() if line.strip() and not line.startswith("#")]
    return "\n".join(line.format(**values) for line in lines) + "\n"


def agent_user(proxy_uri: str) -> str:
    """The Redis user of the agent of ``proxy_uri``: ``agent-`` and the URI with every
    character other than a letter, digit or dot as ``-`` (``agent-sip-10.0.0.5-5060``)."""
    return "agent-" + re.sub(r"[^A-Za-z0-9.]", "-", proxy_uri)


def agent_rules(proxy_uri: str, prefix: str, password: str) -> list[str]:
    """``ACL SETUSER`` rules of that agent: its own report key and the announcement channel,
    written only, nothing else."""
    return [
        "reset",
        "on",
        f"#{password_hash(password)}",
        f"%W~{_glob_escape(prefix)}report:{_glob_escape(proxy_uri)}",
        f"&{_glob_escape(prefix)}reports",
        *AGENT_COMMANDS.split(),
    ]


def _glob_escape(text: str) -> str:
    """``text`` matched literally by a Redis glob pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)
