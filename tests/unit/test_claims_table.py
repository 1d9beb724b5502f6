"""docs/claims.md names, for each claim, the test that proves it: every one must exist, so
the table cannot go on naming a test that was renamed or deleted."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "docs" / "claims.md"
NAMED_TEST = re.compile(r"`(tests/[\w/]+\.py)::(test_\w+)`")
CLAIMS = set(range(1, 20))
"""The brief's claims, 1 to 19: each must have a row."""


def functions_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}


def test_every_test_the_claims_table_names_exists() -> None:
    named = NAMED_TEST.findall(TABLE.read_text())
    assert len(named) >= 14  # one per row at least
    missing = [
        f"{path}::{name}"
        for path, name in named
        if not (ROOT / path).is_file() or name not in functions_in(ROOT / path)
    ]
    assert missing == []


def test_every_claim_has_a_row_with_a_named_test() -> None:
    covered: set[int] = set()
    for line in TABLE.read_text().splitlines():
        cells = [cell.strip() for cell in line.split("|")[1:-1]]
        if len(cells) == 4 and NAMED_TEST.search(cells[3]):
            covered |= {int(n) for n in re.findall(r"\d+", cells[0])}
    assert covered == CLAIMS


def test_every_file_the_claims_table_names_as_code_exists() -> None:
    package = ROOT / "kemi" / "counterpoise"
    named = []
    for line in TABLE.read_text().splitlines():
        cells = [cell.strip() for cell in line.split("|")[1:-1]]
        if len(cells) == 4 and NAMED_TEST.search(cells[3]):
            named += re.findall(r"`([\w/.-]+(?:\.py|\.cfg|/))`", cells[2])
    assert len(named) >= 14
    missing = [path for path in named if not ((package / path).exists() or (ROOT / path).exists())]
    assert missing == []
