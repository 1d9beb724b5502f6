"""The environment Kamailio's embedded Python gets (kemi/counterpoise/interpreter.py)."""

from __future__ import annotations

import os

from counterpoise import assets, interpreter


def test_debian_python_first_and_this_install_on_the_path(monkeypatch) -> None:
    monkeypatch.setenv("PATH", "/root/.pyenv/shims:/usr/local/bin:/usr/bin")
    monkeypatch.setenv("PYTHONHOME", "/root/.pyenv/versions/3.11.7")
    env = interpreter.environ()
    assert env["PATH"].split(os.pathsep)[0] == interpreter.EMBEDDED_PYTHON_BIN
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(assets.PACKAGE.parent)
    assert env["PYTHONHOME"] == ""  # unset for Python: the caller's would win otherwise
    assert env["PYTHONNOUSERSITE"] == "1"


def test_import_path_holds_package_folders_only() -> None:
    for folder in interpreter.import_path()[1:]:
        assert folder.endswith(interpreter.SITE_FOLDERS)
