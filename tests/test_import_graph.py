"""The import graph between the project's files: no cycles, and the library imports nothing above it.

Every ``import`` statement counts, also those inside functions (a lazy import is still a
dependency), and so do those under ``if TYPE_CHECKING:`` (a type is a dependency too).
``from package import name`` counts as an import of ``package.name`` when that is a module,
else of ``package`` itself. Run ``python -m tests.test_import_graph`` to print
the graph's cycles and the library's upward imports.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from tests import REPO_ROOT

PACKAGES = ("atomicfile", "das", "surrogate", "online", "config", "world", "dasapp")
#: What each layer may not import (DESIGN.md: das imports nothing above it; surrogate knows nothing of diffusion).
FORBIDDEN = {
    "atomicfile": ("das", "surrogate", "online", "config", "world", "dasapp"),
    "das": ("surrogate", "online", "config", "world", "dasapp"),
    "surrogate": ("das", "online", "config", "world", "dasapp"),
    "world": ("surrogate", "online", "config", "dasapp"),
}


def module_files(root: Path = REPO_ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the project's packages."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:  # relative: resolve against this module's package
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return [f"{target}.{alias.name}" for alias in node.names] + [target]


def import_graph(root: Path = REPO_ROOT) -> dict[str, set[str]]:
    """Module -> the project modules it imports (anywhere in the file)."""
    modules = module_files(root)
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        edges = set()
        for node in ast.walk(tree):
            names = _imported(node, module, is_package)
            if isinstance(node, ast.ImportFrom):  # ``from a import b``: the submodule a.b if it is one, else a
                submodules = [n for n in names[:-1] if n in modules]
                names = submodules + ([names[-1]] if len(submodules) < len(names) - 1 else [])
            edges.update(_nearest_module(name, modules) for name in names)
        edges.discard(None)
        edges.discard(module)
        graph[module] = edges
    return graph


def _nearest_module(name: str, modules: dict[str, Path]) -> str | None:
    """`name` or its closest enclosing package that is a project module (None outside the project)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(start: str) -> None:  # iterative, so deep graphs cannot overflow the recursion limit
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


#: Programs inside a lower layer's folder, which no module imports: ``python -m das`` hands its
#: command line to the application layer's tool (``das/__main__.py`` says so).
PROGRAMS = ("das.__main__",)


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(importer, imported) pairs where a lower layer imports a layer above it (programs aside)."""
    bad = []
    for module, targets in sorted(graph.items()):
        if module in PROGRAMS:
            continue
        forbidden = FORBIDDEN.get(module.split(".")[0], ())
        bad += [(module, target) for target in sorted(targets) if target.split(".")[0] in forbidden]
    return bad


def test_the_checker_finds_a_cycle_and_an_upward_import(tmp_path):
    (tmp_path / "das").mkdir()
    (tmp_path / "das" / "__init__.py").write_text("")
    (tmp_path / "das" / "a.py").write_text("def f():\n    from das import b\n")
    (tmp_path / "das" / "b.py").write_text("from .a import f\nimport online.x\n")
    (tmp_path / "online").mkdir()
    (tmp_path / "online" / "__init__.py").write_text("")
    (tmp_path / "online" / "x.py").write_text("X = 1\n")
    graph = import_graph(tmp_path)
    assert cycles(graph) == [["das.a", "das.b"]]
    assert upward_imports(graph) == [("das.b", "online.x")]


def test_no_import_cycles_between_files():
    assert cycles(import_graph()) == []


def test_the_library_imports_nothing_above_it():
    assert upward_imports(import_graph()) == []


if __name__ == "__main__":
    graph = import_graph()
    for component in cycles(graph):
        print("cycle:", " ".join(component))
    for module, target in upward_imports(graph):
        print(f"upward: {module} -> {target}")
    sys.exit(0)
