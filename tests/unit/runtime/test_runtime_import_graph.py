"""The runtime's modules import each other without cycles, counting lazy (function-level) imports too.

A lazy import hides a cycle from the interpreter, not from the design: serve.py and multinode.py used to import each
other inside functions. The graph here is read from the source with ``ast``, so it sees every import statement.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

import neuron_runtime

PACKAGE_DIR = Path(neuron_runtime.__file__).parent
PACKAGE = "neuron_runtime"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([PACKAGE, *parts])


def imported_modules(tree: ast.Module, known: Set[str], current: str) -> Set[str]:
    """The package's modules that ``tree`` imports anywhere (``from pkg import mod`` counts as importing mod)."""
    found: Set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{current}: relative import (the runtime spells every import absolutely)"
            base = node.module or ""
            if base in known:
                found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known)
    found.discard(current)
    return found


def import_graph() -> Dict[str, Set[str]]:
    paths = sorted(PACKAGE_DIR.rglob("*.py"))
    known = {module_name(p) for p in paths}
    return {module_name(p): imported_modules(ast.parse(p.read_text()), known, module_name(p)) for p in paths}


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Every strongly connected component with more than one module (Tarjan), as sorted lists."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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


def test_graph_is_read():
    graph = import_graph()
    assert "neuron_runtime.nxdi_server" in graph["neuron_runtime.multinode"]
    assert "neuron_runtime.multinode" in graph["neuron_runtime.serve"]
    assert "neuron_runtime.process" in graph["neuron_runtime.serve"]


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_multinode_never_imports_serve():
    assert "neuron_runtime.serve" not in import_graph()["neuron_runtime.multinode"]


def test_the_cycle_check_can_fail():
    known = {"neuron_runtime.a", "neuron_runtime.b", "neuron_runtime.c"}
    lazy_a = ast.parse("def f():\n    from neuron_runtime import b\n")
    b = ast.parse("from neuron_runtime.a import thing\n")
    graph = {
        "neuron_runtime.a": imported_modules(lazy_a, known, "neuron_runtime.a"),
        "neuron_runtime.b": imported_modules(b, known, "neuron_runtime.b"),
        "neuron_runtime.c": set(),
    }
    assert cycles(graph) == [["neuron_runtime.a", "neuron_runtime.b"]]
