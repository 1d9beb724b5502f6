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


def test_import_path_holds_package_folders_only(monkeypatch, tmp_path) -> None:
    pip_folder = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    debian_folder = tmp_path / "usr" / "lib" / "python3" / "dist-packages"
    stdlib = tmp_path / "usr" / "lib" / "python3.11"
    for folder in (pip_folder, debian_folder, stdlib):
        folder.mkdir(parents=True, exist_ok=True)
    missing = tmp_path / "gone" / "site-packages"
    entries = [str(stdlib), str(pip_folder), str(missing), str(debian_folder), str(pip_folder)]
    monkeypatch.setattr("sys.path", entries)
    # The package's own folder first; then the existing package folders once each, in order;
    # neither the standard library nor a folder that does not exist.
    assert interpreter.import_path() == [
        str(assets.PACKAGE.parent),
        str(pip_folder),
        str(debian_folder),
    ]
