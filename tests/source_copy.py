"""A copy of the source tree to build or install from: pip writes ``build/`` and the
egg-info beside the sources, and a test must not write into the clone it runs from."""

from __future__ import annotations

import shutil
from pathlib import Path

from counterpoise import assets

NOT_BUILT = (".venv", ".git", "build", "*.egg-info", "__pycache__", "bench")
"""What a build never reads: the tooling, earlier outputs and the benchmarks."""


def copy_source(target: Path) -> Path:
    shutil.copytree(assets.SOURCE_TREE, target, ignore=shutil.ignore_patterns(*NOT_BUILT))
    return target
