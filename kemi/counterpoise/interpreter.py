"""The environment of the Python interpreter Kamailio embeds (app_python3), and a check that
the KEMI code imports in it.

app_python3 links Debian's libpython3.11 but lets it find its ``sys.prefix`` the way a
``python3`` command would: from the first ``python3`` on ``PATH``. With a pyenv, conda or
venv ``python3`` first, the embedded interpreter takes that prefix (a venv's
``pyvenv.cfg`` wins even over ``PYTHONHOME``), does not see Debian's ``python3-msgpack``
and ``python3-redis``, and Kamailio dies at start-up. So Kamailio is started with
``EMBEDDED_PYTHON_BIN`` first on ``PATH`` (the embedded interpreter then is Debian's own),
``PYTHONPATH`` naming the folders this installation imports from (its venv's
site-packages, or the source tree of an editable install), and no ``PYTHONHOME`` or user
site of whoever runs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from counterpoise import assets

EMBEDDED_PYTHON_BIN = "/usr/bin"
"""Folder of the ``python3`` whose library Kamailio embeds: Debian's kamailio-python3-modules
links /usr/lib/<arch>/libpython3.11.so, the library of /usr/bin/python3."""

KEMI_IMPORTS = (
    "msgpack",
    "redis",
    "counterpoise.core.sync",
    "counterpoise.store.pool",
    "counterpoise.store.location",
)
"""What the KEMI code needs besides ``KSR`` (which exists only inside Kamailio)."""

CHECK_TIMEOUT_S = 20.0


class EmbeddingError(RuntimeError):
    """The embedded interpreter would not run the KEMI code; the message says why."""


SITE_FOLDERS = ("site-packages", "dist-packages")
"""Last component of the folders pip (venv) and Debian install packages into."""


def import_path() -> list[str]:
    """The folders this installation imports from: the one holding the ``counterpoise``
    package first (a venv's site-packages, or ``kemi/`` of an editable install), then this
    interpreter's package folders (the embedded interpreter has its own standard library)."""
    folders = [str(assets.PACKAGE.parent)]
    for entry in sys.path:
        if Path(entry).name in SITE_FOLDERS and Path(entry).is_dir() and entry not in folders:
            folders.append(entry)
    return folders


def environ() -> dict[str, str]:
    """The variables to add to Kamailio's environment (and the check's) so the embedded
    interpreter is Debian's and imports this installation."""
    return {
        "PATH": os.pathsep.join([EMBEDDED_PYTHON_BIN, os.environ.get("PATH", os.defpath)]),
        "PYTHONPATH": os.pathsep.join(import_path()),
        "PYTHONHOME": "",  # Python treats an empty PYTHON* variable as unset
        "PYTHONNOUSERSITE": "1",  # the caller's ~/.local packages are not the install's
    }


def check_imports() -> None:
    """Import the KEMI code's modules in Debian's ``python3`` with ``environ()``, as the
    embedded interpreter will; ``EmbeddingError`` naming the missing one, or the other
    ``counterpoise`` it would run instead of this one."""
    env = {**os.environ, **environ()}
    python = shutil.which("python3", path=env["PATH"])
    if python is None:
        raise EmbeddingError(f"no python3 in {EMBEDDED_PYTHON_BIN} (install python3)")
    program = f"import {', '.join(KEMI_IMPORTS)}, counterpoise; print(counterpoise.__file__)"
    result = subprocess.run(
        [python, "-c", program],
        env=env,
        capture_output=True,
        text=True,
        timeout=CHECK_TIMEOUT_S,
        check=False,
        cwd="/",
    )
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise EmbeddingError(f"the KEMI code does not import in {python}: {reason}")
    found = result.stdout.strip()
    if Path(found).resolve().parent != assets.PACKAGE:
        raise EmbeddingError(
            f"{python} imports another counterpoise ({found}) than this one ({assets.PACKAGE})"
        )
