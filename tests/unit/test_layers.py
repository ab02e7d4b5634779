"""Imports inside cw point one way: each package imports only from the layers below it.

Read from the source with ``ast`` (nothing is imported), so a new upward import fails here
before it becomes a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import cw

CW = Path(cw.__file__).parent

#: Lowest first. A package may import from its own layer's modules and from lower layers only;
#: two packages in one layer know nothing of each other.
LAYERS: list[set[str]] = [
    {"__init__", "defaults", "errors"},
    {"states", "settings"},
    {"host"},
    {"plans"},
    {"store"},
    {"git"},
    {"agents", "transport", "maintenance"},
    {"district"},
    {"fsui", "service", "web"},
    {"cli"},
    {"__main__"},
]
LAYER = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _part(module: str) -> str:
    """The layer of a module ``cw.X...``: its package or top-level module's name."""
    return module.split(".")[1] if "." in module else "__init__"


def _is_module(name: str) -> bool:
    path = CW.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(path: Path) -> set[str]:
    """The cw modules ``path`` imports: ``from cw.store import db`` is ``cw.store.db``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "cw" or node.module.startswith("cw."):
                for alias in node.names:
                    inner = f"{node.module}.{alias.name}"
                    found.add(inner if _is_module(inner) else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("cw.")}
    return found


def _module(path: Path) -> str:
    return ".".join(("cw", *path.relative_to(CW).with_suffix("").parts)).removesuffix(".__init__")


def _edges() -> list[tuple[str, str, str]]:
    edges = []
    for path in sorted(CW.rglob("*.py")):
        source = _module(path)
        for target in _imports(path):
            edges.append((str(path.relative_to(CW.parent)), _part(source), _part(target)))
    return edges


def test_every_package_of_cw_has_a_layer() -> None:
    parts = {_part(_module(path)) for path in CW.rglob("*.py")}
    assert parts - set(LAYER) == set()


def test_imports_point_down_the_layers() -> None:
    upward = [
        f"{path}: {source} imports {target}"
        for path, source, target in _edges()
        if source != target and target != "__init__" and LAYER[target] >= LAYER[source]
    ]
    assert upward == []


def test_no_module_of_cw_imports_itself_round_in_a_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for path in sorted(CW.rglob("*.py")):
        source = _module(path)
        # A package's own __init__ runs before any of its modules: not an edge.
        graph[source] = {t for t in _imports(path) if not source.startswith(f"{t}.")}
    seen: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> list[str] | None:
        seen[module] = 1
        for target in sorted(graph.get(module, ())):
            if seen.get(target) == 1:
                return [*path, module, target]
            if target not in seen and (cycle := visit(target, [*path, module])):
                return cycle
        seen[module] = 2
        return None

    cycles = [c for m in sorted(graph) if m not in seen and (c := visit(m, []))]
    assert cycles == []
