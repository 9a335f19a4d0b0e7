"""The package's architecture, checked: no import cycles (lazy imports included), and
dependencies point inward: the pure core imports no adapter (DESIGN.md, "Package layout")."""

from __future__ import annotations

import ast
from pathlib import Path

import streamheal

PACKAGE = Path(streamheal.__file__).parent

# The pure core: decoding, config, models, the Engine and what it is made of. It does no
# I/O, so the worker, replay, retraining and a notebook all drive the same code.
CORE = (
    "streamheal.config",
    "streamheal.cron",  # a leaf (croniter): config checks schedules with it
    "streamheal.errors",
    "streamheal.events",
    "streamheal.models",
    "streamheal.pickling",
    "streamheal.joins",
    "streamheal.guards",
    "streamheal.block",
    "streamheal.serving",
    "streamheal.policy",
    "streamheal.engine",
    "streamheal.detectors",
)


def _modules() -> dict[str, Path]:
    """Every module by name: Python files, and C extensions by their source (``_x.c`` is
    ``_x``, built by setup.py; it imports no project module)."""
    modules = {}
    for path in [*PACKAGE.rglob("*.py"), *PACKAGE.rglob("*.c")]:
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports anywhere in its body (lazy imports inside
    functions count: they are cycles all the same, only deferred)."""

    def known(target: str) -> str:
        while target not in modules:
            target = target.rpartition(".")[0]
        return target

    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {known(a.name) for a in node.names if a.name.startswith("streamheal.")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base == "streamheal" or base.startswith("streamheal."):
                found |= {known(f"{base}.{a.name}") for a in node.names}
    found.discard(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {
        name: _imports(name, path, modules) if path.suffix == ".py" else set()
        for name, path in modules.items()
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _in_core(name: str) -> bool:
    return any(name == c or name.startswith(c + ".") for c in CORE)


def test_the_import_graph_has_no_cycles() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_core_imports_no_adapter() -> None:
    graph = _graph()
    outward = {
        name: sorted(d for d in deps if not _in_core(d) and d != "streamheal.schema")
        for name, deps in graph.items()
        if _in_core(name)
    }
    assert {name: deps for name, deps in outward.items() if deps} == {}
