"""The layers of ``kemi/`` hold, read from the source with ``ast`` (every import counts, those
inside functions too): Kamailio is touched only in ``kamailio/``, Redis only in ``store/``,
``core/`` is pure, and no module imports itself back through others."""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

KEMI = Path(__file__).resolve().parents[2] / "kemi"
PACKAGE = "counterpoise"
ENTRY_SCRIPT = "counterpoise_ksr"
"""The file Kamailio loads; it imports the edge, so it may import KSR too."""
NOT_IN_CORE = ("kamailio", "store", "cli", "agent", "harness", "processes", "clock")
CLOCK_MODULES = {"time", "datetime"}


def module_name(path: Path) -> str:
    parts = path.relative_to(KEMI).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(KEMI.rglob("*.py"))}
PACKAGES = {name for name, path in MODULES.items() if path.name == "__init__.py"}


def imports(name: str) -> Iterator[tuple[str, int]]:
    """Every module ``name`` imports (absolute names, relative imports resolved), with the
    line: for ``from p import x`` that is ``p.x`` when ``x`` is a module, else ``p``."""
    path = MODULES[name]
    package = name if name in PACKAGES else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield (full if full in MODULES else base), node.lineno


def top(module: str) -> str:
    return module.split(".")[0]


def in_package(name: str, sub: str) -> bool:
    return name == f"{PACKAGE}.{sub}" or name.startswith(f"{PACKAGE}.{sub}.")


def violations(allowed: Callable[[str], bool], banned: Callable[[str], bool]) -> list[str]:
    """``file:line imports target`` for every import of a ``banned`` target by a module not
    ``allowed`` to."""
    return [
        f"{MODULES[name].relative_to(KEMI)}:{line} imports {target}"
        for name in MODULES
        if not allowed(name)
        for target, line in imports(name)
        if banned(target)
    ]


def test_the_tree_is_read():
    """The checks below see the modules and their imports (else they would pass vacuously)."""
    assert {"counterpoise.core.sync", "counterpoise.kamailio.app", ENTRY_SCRIPT} <= set(MODULES)
    targets = {target for target, _ in imports("counterpoise.kamailio.app")}
    assert {"KSR", "counterpoise.core.attempts", "counterpoise.kamailio.avps"} <= targets


def test_only_the_edge_imports_ksr():
    def edge(name: str) -> bool:
        return in_package(name, "kamailio") or name == ENTRY_SCRIPT

    assert violations(edge, lambda target: top(target) == "KSR") == []


def test_only_the_store_imports_redis():
    assert violations(lambda name: in_package(name, "store"), lambda t: top(t) == "redis") == []


@pytest.mark.parametrize("layer", NOT_IN_CORE)
def test_core_imports_no_outer_layer(layer: str):
    def outer(target: str) -> bool:
        return in_package(target, layer)

    assert violations(lambda name: not in_package(name, "core"), outer) == []


def test_core_reads_no_clock():
    def clock(target: str) -> bool:
        return top(target) in CLOCK_MODULES

    assert violations(lambda name: not in_package(name, "core"), clock) == []


def cycles() -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), and the modules
    importing themselves."""
    graph = {name: {t for t, _ in imports(name) if t in MODULES and t != name} for name in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(name: str) -> None:
        index[name] = low[name] = len(index)
        stack.append(name)
        for target in graph[name]:
            if target not in index:
                visit(target)
                low[name] = min(low[name], low[target])
            elif target in stack:
                low[name] = min(low[name], index[target])
        if low[name] == index[name]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == name:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for name in graph:
        if name not in index:
            visit(name)
    return found


def test_no_import_cycles():
    assert cycles() == []
