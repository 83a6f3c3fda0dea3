"""The shape of the code, read with the standard library's ``ast``: no module reaches into another's
private names, no import cycle (deferred or not, ``TYPE_CHECKING`` included), no function over 50 lines
(the CLI's argument tables excepted), no two modules with one name, no reference to files outside the
repository, and no ``type: ignore[attr-defined]``."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "rnnstream"
MAX_FUNCTION_LINES = 50
ARGUMENT_TABLES = {("rnnstream.cli", "_parser"), ("rnnstream.cli", "add_serve_arguments")}
"""Functions that are one long table of ``add_argument`` calls (a table reads best whole)."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py*")) if p.suffix in (".py", ".pyi")}
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def imported(name: str, tree: ast.Module) -> Iterator[tuple[str, str | None]]:
    """``(module, imported name or None)`` for every import of an rnnstream module in ``tree``."""
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((a.name, None) for a in node.names if a.name.startswith("rnnstream"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            if base.startswith("rnnstream"):
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    yield (full, None) if full in MODULES else (base, alias.name)


def dependencies() -> dict[str, set[str]]:
    return {name: {module for module, _ in imported(name, tree) if module in MODULES and module != name}
            for name, tree in TREES.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                found.append(sorted([v, *component]))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    assert cycles(dependencies()) == []


def test_the_cycle_finder_finds_one() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_another_modules_private_names() -> None:
    private = []
    for name, tree in TREES.items():
        for module, symbol in imported(name, tree):
            if symbol is not None and symbol.startswith("_") and not symbol.startswith("__"):
                private.append(f"{name} imports {module}.{symbol}")
            leaf = module.rpartition(".")[2]
            if symbol is None and leaf.startswith("_") and module.rpartition(".")[0] != name.rpartition(".")[0]:
                private.append(f"{name} imports the private module {module}")  # only its own package may
    assert private == []


def test_no_module_reads_private_attributes_of_another() -> None:
    """``obj._x`` only on ``self``/``cls``, or on an object of a class of the same module."""
    reads = []
    for name, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                    continue
                if not _same_module(name, node):
                    reads.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    assert reads == []


def _same_module(name: str, node: ast.Attribute) -> bool:
    """Whether ``node`` reads a private attribute that the module ``name`` itself defines."""
    defined = {
        target.attr
        for target in ast.walk(TREES[name])
        if isinstance(target, ast.Attribute) and isinstance(target.ctx, ast.Store)
    } | {f.name for f in ast.walk(TREES[name]) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)}
    return node.attr in defined


def test_no_function_over_50_lines() -> None:
    long = []
    for name, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and (name, node.name) not in ARGUMENT_TABLES:
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert long == []


def test_no_two_modules_share_a_name() -> None:
    stems: dict[str, list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        if path.name not in ("__init__.py", "__main__.py"):
            stems.setdefault(path.stem, []).append(str(path.relative_to(PACKAGE)))
    assert {stem: paths for stem, paths in stems.items() if len(paths) > 1} == {}


@pytest.mark.parametrize("pattern", ["FORMATS.md", "DESIGN.md", "shared/", "seeds/", "type: ignore[attr-defined]"])
def test_nothing_points_outside_the_repository_or_ignores_attributes(pattern: str) -> None:
    sources = [path for path in PACKAGE.rglob("*") if path.suffix in (".py", ".pyi", ".c", ".h")]
    found = [f"{path.relative_to(PACKAGE)}:{n}" for path in sources
             for n, line in enumerate(path.read_text().splitlines(), 1) if pattern in line]
    assert found == []
