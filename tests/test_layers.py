"""The code's layering: import-linter's contracts (pyproject.toml), no import cycles, no borrowed private names.

Static checks only (nothing is imported or run but ``lint-imports``): well under a second.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import deque
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "ui")  # import-linter's root_packages
TOP_LEVEL = ("app", "main")  # the project's own top-level modules, where present


def test_import_linter_contracts_are_kept():
    """`lint-imports` from the repository root: the [tool.importlinter] contracts in pyproject.toml."""
    exe = Path(sys.executable).parent / "lint-imports"
    assert exe.exists(), f"{exe} is missing: pip install -r requirements-dev.txt (it pins import-linter)"
    proc = subprocess.run([str(exe), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        report = proc.stdout[proc.stdout.find("Contracts\n"):].strip()  # from the report, past the banner
        pytest.fail(f"lint-imports exited {proc.returncode}:\n{report}\n{proc.stderr}".rstrip(), pytrace=False)


# -- import cycles ------------------------------------------------------------------------------------------


def _strongly_connected(nodes: list[str], edges: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the groups of modules that can all reach one another."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for start in nodes:
        if start in index:
            continue
        work = [(start, iter(edges[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for nxt in successors:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(edges[nxt])))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    groups.append(sorted(group))
    return groups


def _shortest_cycle_through(node: str, edges: dict[str, list[str]], group: set[str]) -> list[str]:
    """The shortest path node -> ... -> node inside one strongly connected group (breadth first)."""
    parent: dict[str, str] = {}
    queue = deque([node])
    while queue:
        current = queue.popleft()
        for nxt in edges[current]:
            if nxt not in group:
                continue
            if nxt == node:
                path = [current]
                while path[-1] != node:
                    path.append(parent[path[-1]])
                return [node, *reversed(path[:-1]), node]
            if nxt not in parent:
                parent[nxt] = current
                queue.append(nxt)
    raise AssertionError(f"{node} is in no cycle")  # unreachable for a group of two or more


def _describe(graph: grimp.ImportGraph, cycle: list[str]) -> str:
    lines = [" -> ".join(cycle)]
    for importer, imported in zip(cycle, cycle[1:]):
        details = graph.get_import_details(importer=importer, imported=imported)
        where = "; ".join(f"l.{d['line_number']}: {d['line_contents']}" for d in details[:3])
        lines.append(f"    {importer} -> {imported}  ({where})")
    return "\n".join(lines)


def test_no_import_cycles():
    """No module of core/ or ui/ imports, directly or through others, a module that imports it back.

    A package's ``__init__`` is the package's own module (``core``); imports inside functions and under
    TYPE_CHECKING count too (grimp's defaults), since they still tie the modules together.
    """
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    modules = sorted(graph.modules)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m) & graph.modules) for m in modules}
    cycles: dict[tuple[str, ...], str] = {}
    for group in _strongly_connected(modules, edges):
        members = set(group)
        if len(group) == 1 and group[0] not in edges[group[0]]:
            continue  # a module alone, not importing itself: no cycle
        for node in group:
            cycle = _shortest_cycle_through(node, edges, members)
            ring = cycle[:-1]
            first = ring.index(min(ring))
            key = tuple(ring[first:] + ring[:first])  # the same cycle found from another module counts once
            cycles.setdefault(key, _describe(graph, [*key, key[0]]))
    if cycles:
        pytest.fail(f"{len(cycles)} import cycle(s):\n" + "\n".join(cycles.values()), pytrace=False)


# -- private names --------------------------------------------------------------------------------------


def _module_file(name: str) -> Path | None:
    """The project's file for a dotted module name, or None when the module is not the project's."""
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _project_files() -> list[Path]:
    files = [f for package in PACKAGES for f in sorted((ROOT / package).rglob("*.py"))]
    return files + [ROOT / f"{name}.py" for name in TOP_LEVEL if (ROOT / f"{name}.py").is_file()]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_module_imports_a_private_name_from_another():
    """`from core.model import _helper` reaches into another module's insides: make the name public, or move it.

    Importing a private *module* (`from core import _impl`) is a module import and is allowed.
    """
    found = []
    for path in _project_files():
        module = _module_name(path)
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[:len(anchor) - (node.level - 1)]
                source = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            if not source or _module_file(source) is None:
                continue  # not the project's module
            for alias in node.names:
                if _is_private(alias.name) and _module_file(f"{source}.{alias.name}") is None:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {source} import {alias.name}")
    if found:
        pytest.fail("private names imported from another project module:\n" + "\n".join(found), pytrace=False)
