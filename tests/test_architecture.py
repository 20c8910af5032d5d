"""The package's shape: public names resolve, imports flow down the layers, modules stay small.

The layer table is the one in docs/architecture.md: these tests read it from
there, so the document and the check cannot drift apart.  Adding a subpackage
means adding a row to that table.
"""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

import tlsleak

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "tlsleak"
ARCHITECTURE = ROOT / "docs" / "architecture.md"

#: The public import paths whose ``__all__`` users rely on.
PUBLIC_MODULES = ["tlsleak.strategies", "tlsleak.sharing", "tlsleak.targets"]
#: Re-export modules: they sit above everything they re-export.
FACADES = {"tlsleak", "tlsleak.strategies", "tlsleak.sharing"}

MAX_TOP_LEVEL_MODULES = 6
MAX_LINES = 700
#: Data-heavy catalogues, exempt from MAX_LINES (paths under src/tlsleak/).
CATALOGUES = {"cases/der.py", "cases/defects.py", "cases/pem.py"}


# --- public names ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", tlsleak.__all__)
def test_public_name_resolves(name: str) -> None:
    assert getattr(tlsleak, name) is not None


@pytest.mark.parametrize("name", tlsleak.__all__)
def test_public_name_resolves_first_in_a_fresh_process(name: str) -> None:
    # The names are imported lazily (PEP 562): each must resolve when it is the
    # first thing a process asks for, whatever this process imported already.
    probe = f"import tlsleak; assert getattr(tlsleak, {name!r}) is not None"
    _run_python(probe)


def test_star_import_in_a_fresh_process() -> None:
    probe = (
        "from tlsleak import *\n"
        "import tlsleak\n"
        "missing = [n for n in tlsleak.__all__ if n not in globals()]\n"
        "assert not missing, missing\n"
    )
    _run_python(probe)


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_public_module_exports_exist(module: str) -> None:
    mod = importlib.import_module(module)
    missing = [name for name in mod.__all__ if not hasattr(mod, name)]
    assert not missing, f"{module}.__all__ names what it does not have: {missing}"


def _run_python(code: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr


# --- the layer table ------------------------------------------------------------------------------

_ROW = re.compile(r"^\|\s*(\d+)\s*\|([^|]*)\|")
_NAME = re.compile(r"`(tlsleak(?:\.\w+)*)`")


@cache
def layers() -> dict[str, int]:
    """Package or module name -> layer, from the table in docs/architecture.md."""
    table: dict[str, int] = {}
    for line in ARCHITECTURE.read_text().splitlines():
        row = _ROW.match(line)
        if row is None:
            continue
        names = _NAME.findall(row[2])
        assert names, f"docs/architecture.md: a layer row names no tlsleak module: {line}"
        for name in names:
            assert name not in table, f"docs/architecture.md: {name} is in two layer rows"
            table[name] = int(row[1])
    return table


def layer_of(module: str) -> int | None:
    """The layer of a module: the table's row for its longest listed prefix.

    ``tlsleak`` itself (the facade ``__init__``) is matched only exactly, not
    as a prefix of every module.
    """
    table = layers()
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in table and (prefix != "tlsleak" or module == "tlsleak"):
            return table[prefix]
    return None


def test_layer_table_is_sound() -> None:
    table = layers()
    assert len(set(table.values())) >= 8, f"docs/architecture.md: layer table not found: {table}"
    top = max(table.values())
    misplaced = sorted(f for f in FACADES if table.get(f) != top)
    assert not misplaced, f"facades must be in the top layer ({top}) of the table: {misplaced}"
    assert layer_of("tlsleak.cases.der") == table["tlsleak.cases"]
    assert layer_of("tlsleak.ledgers._native") == table["tlsleak.ledgers"]
    assert layer_of("tlsleak.nowhere") is None  # not swallowed by the facade `tlsleak`


def test_every_module_has_a_layer() -> None:
    unplaced = sorted(m for m in modules() if layer_of(m) is None)
    assert not unplaced, f"add these to the layer table in docs/architecture.md: {unplaced}"


# --- imports --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    path: Path
    line: int
    #: Runs when the importer is imported: not inside a function, nor under
    #: ``if TYPE_CHECKING:``.
    module_level: bool

    def __str__(self) -> str:
        where = f"{self.path.relative_to(ROOT)}:{self.line}"
        return f"{where}: {self.importer} (layer {layer_of(self.importer)}) imports " + (
            f"{self.imported} (layer {layer_of(self.imported)})"
        )


@cache
def modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


@cache
def imports() -> tuple[Import, ...]:
    """Every import of a tlsleak module in the package, wherever it is written.

    Module-level and function-level ``import`` and ``from ... import``
    statements (relative ones resolved), and string arguments to
    ``importlib.import_module("tlsleak....")``.
    """
    found: list[Import] = []
    for name, path in modules().items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), str(path))
        for node, module_level in _walk(tree, module_level=True):
            for imported in _imported(node, name, is_package):
                if imported == "tlsleak" or imported.startswith("tlsleak."):
                    line = getattr(node, "lineno", 0)
                    found.append(Import(name, imported, path, line, module_level))
    return tuple(found)


def _walk(node: ast.AST, *, module_level: bool) -> Iterator[tuple[ast.AST, bool]]:
    for child in ast.iter_child_nodes(node):
        yield child, module_level
        inner = module_level and not isinstance(
            child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
        )
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for part in child.body:
                yield part, False
                yield from _walk(part, module_level=False)
            for part in child.orelse:
                yield part, inner
                yield from _walk(part, module_level=inner)
            continue
        yield from _walk(child, module_level=inner)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(node: ast.AST, importer: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            package = importer.split(".")
            if not is_package:
                package.pop()
            base = package[: len(package) - (node.level - 1)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        # ``from tlsleak.cases import der`` imports the module tlsleak.cases.der.
        return [
            f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules() else source
            for alias in node.names
        ]
    if (
        isinstance(node, ast.Call)
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
        and (
            (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            or (isinstance(node.func, ast.Name) and node.func.id in {"import_module", "__import__"})
        )
    ):
        return [node.args[0].value]
    return []


def test_import_scan_sees_every_kind_of_import() -> None:
    # Guards the scanner itself: each kind of import the package uses is seen.
    seen = {(i.importer, i.imported, i.module_level) for i in imports()}
    assert ("tlsleak.strategies", "tlsleak.cases.strategies", True) in seen  # from ... import
    assert ("tlsleak.cases.defects", "tlsleak.cases.der", True) in seen  # from package import mod
    assert ("tlsleak.targets._binding", "tlsleak.ledgers.shim", False) in seen  # import_module
    assert ("tlsleak", "tlsleak.cases.case", False) in seen  # if TYPE_CHECKING:


def test_no_import_goes_up_a_layer() -> None:
    upward = [
        str(i)
        for i in imports()
        if (low := layer_of(i.importer)) is not None
        and (high := layer_of(i.imported)) is not None
        and high > low
    ]
    listing = "\n".join(upward)
    assert not upward, f"imports that go up the layer table of docs/architecture.md:\n{listing}"


def test_no_import_cycle() -> None:
    # Module-level imports only (those that run on import; not the ones inside
    # functions or under ``if TYPE_CHECKING:``): those are the cycles that
    # break or reorder imports.  A package's implicit import of its parent
    # package is not an edge, so ``__init__`` re-exporting its modules is fine.
    graph: dict[str, set[str]] = {m: set() for m in modules()}
    for i in imports():
        if i.module_level and i.imported in graph:
            graph[i.importer].add(i.imported)
    cycles = [sorted(c) for c in _strongly_connected(graph) if len(c) > 1]
    cycles += [[m] for m, targets in graph.items() if m in targets]
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_cycle_finder_finds_every_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "e"}, "e": {"d"}, "f": set()}
    found = sorted(sorted(c) for c in _strongly_connected(graph) if len(c) > 1)
    assert found == [["a", "b", "c"], ["d", "e"]]


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


# --- size -----------------------------------------------------------------------------------------


def test_few_top_level_modules() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, (
        f"{len(top)} modules directly in src/tlsleak/ (at most {MAX_TOP_LEVEL_MODULES}): {top}; "
        "put new ones in the subpackage of their layer"
    )


def test_no_module_is_too_long() -> None:
    long = []
    for path in modules().values():
        relative = path.relative_to(PACKAGE).as_posix()
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES and relative not in CATALOGUES:
            long.append(f"src/tlsleak/{relative}: {lines} lines")
    assert not long, f"modules over {MAX_LINES} lines (split them):\n" + "\n".join(long)
