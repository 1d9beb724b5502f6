"""The layers of ``kemi/`` and the test bed (``harness/``) hold, read from the source with
``ast`` (every import counts, those inside functions too): Kamailio is touched only in
``kamailio/``, Redis only in ``store/``, ``core/`` is pure, the clocks are read only in
``clock.py``, the product never imports the test bed, and neither modules nor packages import
themselves back through others."""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
KEMI = REPO / "kemi"
ROOTS = {KEMI: "", REPO / "harness": "harness"}
"""Each folder read, with the package name its files are under."""
PACKAGE = "counterpoise"
TEST_BED = "harness"
ENTRY_SCRIPT = "counterpoise_native"
"""The file Kamailio loads; it imports the edge, so it may import KSR too."""
NOT_IN_CORE = ("kamailio", "store", "cli", "agent", "monitoring", "processes", "clock")
CLOCK = f"{PACKAGE}.clock"
CLOCK_MODULES = {"time", "datetime"}


def module_name(path: Path, root: Path) -> str:
    parts = (ROOTS[root], *path.relative_to(root).with_suffix("").parts)
    return ".".join(part for part in (parts[:-1] if parts[-1] == "__init__" else parts) if part)


MODULES = {module_name(path, root): path for root in ROOTS for path in sorted(root.rglob("*.py"))}
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
        f"{MODULES[name].relative_to(REPO)}:{line} imports {target}"
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


def test_only_clock_py_reads_the_clocks():
    """Reading or sleeping on a clock goes through ``clock.py``, so a test can give any
    module a fake clock; ``core/`` is also kept from importing ``clock.py`` above."""

    def clock(target: str) -> bool:
        return top(target) in CLOCK_MODULES

    def kemi(name: str) -> bool:
        return MODULES[name].is_relative_to(KEMI)

    assert violations(lambda name: name == CLOCK or not kemi(name), clock) == []


def test_the_product_never_imports_the_test_bed():
    """The wheel carries ``counterpoise`` without ``harness/``: an import of it would fail
    on an installed node."""

    def test_bed(target: str) -> bool:
        return top(target) == TEST_BED

    assert violations(lambda name: top(name) == TEST_BED, test_bed) == []


def package(module: str) -> str:
    """The package a module belongs to: ``counterpoise.cli`` for ``counterpoise.cli.up``, a
    module directly in ``counterpoise/`` (``clock``, ``processes``) its own, and the test bed
    and the entry script one each."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == PACKAGE else parts[0]


def module_graph() -> dict[str, set[str]]:
    return {name: {t for t, _ in imports(name) if t in MODULES and t != name} for name in MODULES}


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {package(name): set() for name in MODULES}
    for name, targets in module_graph().items():
        graph[package(name)] |= {package(t) for t in targets} - {package(name)}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one node (Tarjan)."""
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


def test_cycles_are_found():
    """The search below sees a cycle of three (else it would pass vacuously)."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_package_graph_is_read():
    graph = package_graph()
    assert {"counterpoise.cli", "counterpoise.core", TEST_BED, ENTRY_SCRIPT} <= set(graph)
    assert {"counterpoise.core", "counterpoise.store"} <= graph["counterpoise.cli"]


def test_no_module_import_cycles():
    assert cycles(module_graph()) == []


def test_no_package_import_cycles():
    """A package imports another only if the other never imports it back, through any path
    and any import, those inside functions too: the packages are layers."""
    assert cycles(package_graph()) == []
