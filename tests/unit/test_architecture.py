"""The house rules that a linter does not see.

import-linter (``make lint``, contracts in pyproject.toml) keeps the arrows
between packages. These tests keep two rules across every module of
``services``, ``api`` and ``worker``:

- no import cycle between modules, however long and whatever the package
  (a cycle hidden by an import inside a function counts too);
- no import inside a function unless its line says why (``# late: <reason>``),
  e.g. an optional heavy dependency such as MLflow in a process that may not
  need it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("services", "api", "worker")


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_between_modules():
    graph = grimp.build_graph(*PACKAGES)
    edges = {
        module: {m for m in graph.find_modules_directly_imported_by(module) if m in graph.modules}
        for module in graph.modules
    }
    assert _cycles(edges) == []


def _function_imports(path: Path) -> list[tuple[int, str]]:
    source = path.read_text()
    lines = source.splitlines()
    found = []
    for fn in ast.walk(ast.parse(source)):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(fn):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    found.append((node.lineno, lines[node.lineno - 1]))
    return sorted(set(found))


@pytest.mark.parametrize("package", PACKAGES)
def test_an_import_inside_a_function_says_why(package):
    unexplained = [
        f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for lineno, line in _function_imports(path)
        if "# late:" not in line and "  late:" not in line
    ]
    assert unexplained == []
