"""The wheel holds only what a running balancer uses: the ``counterpoise`` package with the
files ``counterpoise up`` starts Kamailio and Redis with and those an operator's own
Kamailio config embeds, and none of the demo's test bed
(``harness/``, ``downstream/``, ``sipp-scenarios/``), which stays in the repository."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from counterpoise import assets
from tests.source_copy import copy_source

PRODUCTION_FILES = {"kamailio.cfg", "redis.conf", "users.acl"}
EMBEDDING_FILES = {"counterpoise.cfg", "counterpoise-dialog.cfg", "counterpoise_native.py"}
"""What an operator's own Kamailio config imports (docs/embedding.md), and ``kamailio.cfg``
too."""
TEST_BED = {"harness", "downstream", "sipp-scenarios"}


def build_wheel(tmp_path: Path) -> list[str]:
    """The names in a wheel built from a copy of the source with Debian's setuptools, so
    nothing is downloaded."""
    source = copy_source(tmp_path / "source")
    out = tmp_path / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", str(out), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = out.glob("counterpoise-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_the_wheel_holds_the_product_and_not_the_test_bed(tmp_path: Path) -> None:
    names = build_wheel(tmp_path)
    tops = {name.split("/")[0] for name in names}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"counterpoise"}
    assert not [name for name in names if TEST_BED & set(name.split("/"))]
    shipped = {name.removeprefix("counterpoise/_assets/") for name in names}
    assert shipped >= PRODUCTION_FILES | EMBEDDING_FILES
    assert set(assets.SHIPPED) == PRODUCTION_FILES | EMBEDDING_FILES
