"""Where the files Kamailio and Redis are started with are: in the installed package, or in
the source tree.

A wheel carries them in ``counterpoise/_assets/`` (``setup.py`` copies them there at build
time, so the repository keeps its layout: ``kamailio.cfg`` and ``redis/`` at the top); a
clone or an editable install has no ``_assets`` and uses the files where they are.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
INSTALLED = PACKAGE / "_assets"
SOURCE_TREE = PACKAGE.parents[1]

SHIPPED = {
    "kamailio.cfg": "kamailio.cfg",
    "counterpoise.cfg": "embed/counterpoise.cfg",
    "counterpoise-dialog.cfg": "embed/counterpoise-dialog.cfg",
    "counterpoise_native.py": "kemi/counterpoise_native.py",
    "redis.conf": "redis/redis.conf",
    "users.acl": "redis/users.acl",
}
"""Name in ``_assets`` -> path in the source tree, of every file a wheel carries: only what
``counterpoise up`` runs, which embeds Counterpoise as an operator's own Kamailio config does
(docs/embedding.md; the include's dialog routes beside it, where Kamailio resolves an
include of the including file). The demo's test bed (``harness/``, ``downstream/``,
``sipp-scenarios/``) stays in the repository."""


def path(name: str) -> Path:
    """The file ``name`` of ``SHIPPED``, installed or in the source tree."""
    installed = INSTALLED / name
    return installed if installed.exists() else SOURCE_TREE / SHIPPED[name]
