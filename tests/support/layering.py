"""The structure rules the core's and the simulator's tests check: import circles, and
modules and classes grown too long (lines as ``wc -l`` counts them)."""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path


def import_circles(graph: Mapping[str, set[str]]) -> list[str]:
    """Every circle found walking ``graph`` (module -> the modules it imports), each as
    ``a -> b -> a``; empty when there is none."""
    visiting: list[str] = []
    done: set[str] = set()
    circles: list[str] = []

    def visit(module: str) -> None:
        if module in done:
            return
        if module in visiting:
            circles.append(" -> ".join([*visiting[visiting.index(module) :], module]))
            return
        visiting.append(module)
        for target in sorted(graph.get(module, set())):
            visit(target)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
    return circles


def too_long(
    modules: Mapping[str, Path],
    *,
    max_module_lines: int,
    max_class_lines: int,
    allowed: Mapping[str, int] | None = None,
) -> list[str]:
    """The modules (by name) and classes (``module.Class``) over their limit; ``allowed``
    raises the limit of the names it holds."""
    allowed = allowed or {}
    found: list[str] = []
    for name, path in modules.items():
        text = path.read_text()
        lines = len(text.splitlines())
        if lines > allowed.get(name, max_module_lines):
            found.append(f"{name}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > allowed.get(f"{name}.{node.name}", max_class_lines):
                    found.append(f"{name}: class {node.name} has {size} lines")
    return found
