"""The import graph of `exporter` has no cycle: each module can be read after the ones it uses.

Every import counts, at module level or inside a function (a deferred import still ties two
modules together), except those under `if TYPE_CHECKING:`, which never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "exporter"

Graph = dict[str, set[str]]


def module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[tuple[str, list[str]]]:
    """Return (module, names) of every import outside `if TYPE_CHECKING:` blocks."""
    found: list[tuple[str, list[str]]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names]))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph(package: Path = PACKAGE) -> Graph:
    """Return module -> the exporter modules it imports (`from pkg import sub` names `sub`)."""
    modules = {module_name(p, package): p for p in package.rglob("*.py")}
    graph: Graph = {name: set() for name in modules}
    for name, path in modules.items():
        for target, names in _imports(ast.parse(path.read_text(), str(path))):
            if target not in modules:
                continue
            subs = {f"{target}.{n}" for n in names} & modules.keys()
            graph[name] |= subs or {target}
            if set(names) - {s.rpartition(".")[2] for s in subs}:
                graph[name].add(target)  # names defined in the package's __init__ itself
        graph[name].discard(name)
    return graph


def find_cycle(graph: Graph) -> list[str] | None:
    """Return one cycle as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def test_the_exporter_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert (
        "exporter.store.layout" in graph and graph["exporter.run.pipeline"]
    )  # it read the package
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


@pytest.mark.parametrize(
    ("sources", "cycle"),
    [
        pytest.param(
            {
                "__init__.py": "",
                "a.py": "import exporter.b",
                "b.py": "def f():\n import exporter.a",
            },
            ["exporter.a", "exporter.b", "exporter.a"],
            id="deferred-import-counts",
        ),
        pytest.param(
            {"__init__.py": "", "a.py": "from exporter import b", "b.py": "from exporter import a"},
            ["exporter.a", "exporter.b", "exporter.a"],
            id="from-package-import-submodule",
        ),
        pytest.param(
            {
                "__init__.py": "",
                "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n import exporter.b",
                "b.py": "import exporter.a",
            },
            None,
            id="type-checking-ignored",
        ),
        pytest.param(
            {"__init__.py": "from exporter.a import X", "a.py": "from exporter import VERSION"},
            ["exporter", "exporter.a", "exporter"],
            id="submodule-reading-the-root",
        ),
    ],
)
def test_cycles_are_found(tmp_path: Path, sources: dict[str, str], cycle: list[str] | None) -> None:
    """The checker itself: it sees deferred and `from package import` cycles."""
    package = tmp_path / "exporter"
    package.mkdir()
    for name, text in sources.items():
        (package / name).write_text(text)
    assert find_cycle(import_graph(package)) == cycle
