"""``kamailio.htables`` declares the node's shared memory: ``kamailio.cfg`` creates exactly
those tables, and the code touching each is the code the declaration names."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from counterpoise.core import settings
from counterpoise.kamailio import htables
from counterpoise.kamailio.htables import Htable

from ..fakes.ksr import EMBED_CFG

KEMI = Path(__file__).resolve().parents[2] / "kemi"
PACKAGE = KEMI / "counterpoise"
DECLARATION = PACKAGE / "kamailio" / "htables.py"
DECLARED = {name: value for name, value in vars(htables).items() if isinstance(value, Htable)}
"""Every table of the declaration, by the name the code uses for it."""


def cfg_definitions(cfg: Path) -> list[str]:
    return re.findall(r'^modparam\("htable",\s*"htable",\s*"([^"]*)"\)', cfg.read_text(), re.M)


def module_of(path: str) -> str:
    """The module (``counterpoise``-relative, dotted) that a writer or reader path names, its
    remaining names defined there; fails when it names nothing."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        file = PACKAGE.joinpath(*parts[:cut]).with_suffix(".py")
        if file.exists():
            tree: ast.AST = ast.parse(file.read_text())
            for name in parts[cut:]:
                tree = next(
                    node
                    for node in ast.iter_child_nodes(tree)
                    if getattr(node, "name", None) == name
                    or any(getattr(t, "id", None) == name for t in getattr(node, "targets", []))
                )
            return ".".join(parts[:cut])
    raise AssertionError(f"{path} is no module of counterpoise")


def users(constant: str) -> set[str]:
    """The modules whose code uses ``htables.<constant>``."""
    return {
        ".".join(file.relative_to(PACKAGE).with_suffix("").parts)
        for file in PACKAGE.rglob("*.py")
        if file != DECLARATION
        and any(
            isinstance(node, ast.Attribute)
            and node.attr == constant
            and isinstance(node.value, ast.Name)
            and node.value.id == "htables"
            for node in ast.walk(ast.parse(file.read_text()))
        )
    }


KAMAILIO_CFG = KEMI.parent / "kamailio.cfg"
NATIVE_CONFIGS = (KAMAILIO_CFG, EMBED_CFG, EMBED_CFG.with_name("counterpoise-dialog.cfg"))
CFG_USER = "cfg:"
"""A writer or reader that is a route block of the native configs (``cfg:CP_FLOOD``), not
Python."""


def test_the_include_creates_the_declared_tables_as_declared_in_their_order():
    assert cfg_definitions(EMBED_CFG) == [table.definition() for table in htables.ALL]


def test_the_turnkey_config_takes_its_tables_from_the_include():
    text = KAMAILIO_CFG.read_text()
    assert cfg_definitions(KAMAILIO_CFG) == []
    assert re.search(r'^include_file "embed/counterpoise.cfg"$', text, re.M)


def cfg_blocks() -> dict[str, str]:
    """The route blocks of the native configs, by name (``request_route`` for the main one):
    their bodies."""
    text = "".join(cfg.read_text() for cfg in NATIVE_CONFIGS)
    block = re.compile(r"^(?:\w*route\[([\w:]+)\]|(\w+_route)) \{\n(.*?)^\}", re.M | re.S)
    return {m.group(1) or m.group(2): m.group(3) for m in block.finditer(text)}


def table_uses(body: str, table: str) -> tuple[bool, bool, bool]:
    """Whether a route body writes the table (an assignment, ``$shtinc``, ``$shtdec``), reads
    an entry of it (``$sht`` not assigned), or takes a count from it (``$shtinc``,
    ``$shtdec``: their value is the count)."""
    writes = reads = counts = False
    for found in re.finditer(rf"\$(sht|shtinc|shtdec|shtex)\({table}=>", body):
        end, depth = found.end(), 1
        while depth:
            depth += {"(": 1, ")": -1}.get(body[end], 0)
            end += 1
        assigned = re.match(r"\s*=(?!=)", body[end:]) is not None
        counting = found.group(1) in ("shtinc", "shtdec")
        writes |= assigned or counting
        reads |= found.group(1) == "sht" and not assigned
        counts |= counting
    return writes, reads, counts


def test_every_declared_table_is_listed_once_under_its_own_name():
    assert sorted(DECLARED.values(), key=str) == sorted(htables.ALL, key=str)
    names = [table.name for table in htables.ALL]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("constant", sorted(DECLARED))
def test_a_table_is_used_by_the_modules_that_write_and_read_it(constant: str):
    table = DECLARED[constant]
    assert table.writers
    assert table.readers or table.operators  # written for someone
    paths = table.writers + table.readers
    python = [path for path in paths if not path.startswith(CFG_USER)]
    assert users(constant) == {module_of(path) for path in python}
    assert cfg_named(paths) <= set(cfg_blocks())


def cfg_named(paths: tuple[str, ...]) -> set[str]:
    return {path.removeprefix(CFG_USER) for path in paths if path.startswith(CFG_USER)}


@pytest.mark.parametrize("constant", sorted(DECLARED))
def test_the_config_routes_a_table_names_are_those_that_write_and_read_it(constant: str):
    table, blocks = DECLARED[constant], cfg_blocks()
    uses = {name: table_uses(body, table.name) for name, body in blocks.items()}
    writing = {name for name, (writes, _, _) in uses.items() if writes}
    reading = {name for name, (_, reads, _) in uses.items() if reads}
    counting = {name for name, (_, _, counts) in uses.items() if counts}
    assert cfg_named(table.writers) == writing
    assert reading <= cfg_named(table.readers) <= reading | counting
    assert {name for name, body in blocks.items() if f"({table.name}=>" in body} == (
        cfg_named(table.writers) | cfg_named(table.readers)
    )


def test_no_table_is_named_outside_the_declaration():
    """Only ``core/`` may hold a string equal to a table's name: it cannot reach Kamailio
    (``test_layers``), so such a string there is something else."""
    names = {table.name for table in htables.ALL}
    found = [
        f"{file.relative_to(KEMI)}:{node.lineno} {node.value!r}"
        for file in PACKAGE.rglob("*.py")
        if file != DECLARATION and "core" not in file.relative_to(PACKAGE).parts
        for node in ast.walk(ast.parse(file.read_text()))
        if isinstance(node, ast.Constant) and node.value in names
    ]
    assert found == []


def test_the_location_cache_expires_at_the_bound_of_its_setting():
    assert htables.LOCATION_CACHE.autoexpire_s * 1000 == settings.LOCATION_CACHE_MAX_MS


def test_a_rate_window_expires_two_windows_after_it_started():
    """The flood route's windows are whole seconds of wall-clock time (``$TV(s)``)."""
    assert "$var(cp_window) = $TV(s);" in KAMAILIO_CFG.read_text()
    assert htables.RATES.autoexpire_s == 2
