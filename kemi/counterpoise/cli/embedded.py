"""The embedded Redis's folder, users and passwords: made at first start, found by every
command.

``counterpoise up`` renders ``redis/users.acl`` into ``<redis_data_dir>/users.acl`` with a
password per role, generated once into ``<redis_data_dir>/<role>.password`` (mode 0600, so
only the user running Counterpoise and root read them). Commands find the file of their role
there when no URL and no password file was given; no password is ever a process argument.
The folder is 0700 and every file in it 0600, also those Redis rewrites (``make_private``).
"""

from __future__ import annotations

import os
import secrets
import urllib.parse
from pathlib import Path

from counterpoise import assets
from counterpoise.core.roles import ROLES, render_acl
from counterpoise.core.settings import Settings

ACL_TEMPLATE = assets.path("users.acl")
ACL_FILE = "users.acl"
PASSWORD_BYTES = 24
"""192 random bits per password (``secrets.token_urlsafe``)."""


def data_dir(settings: Settings) -> Path:
    """The embedded Redis's one fixed folder (``redis_data_dir``): the same at every
    start, so the operator's pool survives a restart."""
    if settings.redis.redis_data_dir:
        return Path(settings.redis.redis_data_dir)
    if os.geteuid() == 0:
        return Path("/var/lib/counterpoise/redis")
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "counterpoise" / "redis"


def password_file(data_dir: Path, role: str) -> Path:
    return data_dir / f"{role}.password"


def prepare(data_dir: Path, prefix: str) -> Path:
    """Make the passwords that do not exist yet and write the ACL file the embedded Redis
    loads; keeps the agent users ``counterpoise agent-user`` saved into it. Returns its path."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    make_private(data_dir)
    passwords = {}
    for role in ROLES:
        path = password_file(data_dir, role)
        if not path.exists():
            write_private(path, secrets.token_urlsafe(PASSWORD_BYTES) + "\n")
        passwords[role] = path.read_text().strip()
    acl = data_dir / ACL_FILE
    agents = []
    if acl.exists():
        agents = [line for line in acl.read_text().splitlines() if line.startswith("user agent-")]
    text = render_acl(ACL_TEMPLATE.read_text(), prefix, passwords)
    write_private(acl, text + "".join(line + "\n" for line in agents))
    return acl


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def as_role(settings: Settings, data_dir: Path, role: str) -> Settings:
    """``settings`` connecting to the embedded Redis as ``role``: when their URL is a local
    ``redis://`` one naming no user, they name no password file of their own, and this user
    may read that role's password file (the one ``counterpoise up`` made)."""
    parts = urllib.parse.urlsplit(settings.redis.redis_url)
    path = password_file(data_dir, role)
    if (
        parts.scheme != "redis"
        or parts.hostname not in LOCAL_HOSTS
        or parts.username
        or parts.password
        or settings.redis.redis_password_file
        or not os.access(path, os.R_OK)
    ):
        return settings
    url = parts._replace(netloc=f"{role}@{parts.netloc}").geturl()
    return settings.with_values(redis_url=url, redis_password_file=str(path))


def make_private(folder: Path) -> None:
    """``folder`` and every folder in it 0700, every file 0600: the append-only files hold the
    pool, the registrations and the Call-IDs, ``users.acl`` the roles' password hashes. The
    Redis process runs with umask 077 (``processes.start_redis``), so what it writes later is
    private too; this also closes a folder an older version left readable."""
    folder.chmod(0o700)
    for path in folder.rglob("*"):
        if not path.is_symlink():
            path.chmod(0o700 if path.is_dir() else 0o600)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (created 0600, never wider)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    os.chmod(path, 0o600)
