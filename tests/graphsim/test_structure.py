"""The simulator's package stays layered: no import circle, no module or class grown too big."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "devstack" / "graphsim"
MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 250


def _local_imports(path: Path) -> set[str]:
    """Modules of the package that ``path`` imports, TYPE_CHECKING blocks included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("devstack.graphsim."):
            found.add(node.module.split(".")[2])
    return found


def test_the_package_has_no_import_circle():
    graph = {p.stem: _local_imports(p) for p in PACKAGE.glob("*.py")}
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> None:
        if module in done:
            return
        assert module not in visiting, f"import circle: {' -> '.join(visiting[visiting.index(module):] + [module])}"
        visiting.append(module)
        for target in sorted(graph.get(module, set())):
            visit(target)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_no_module_or_class_is_too_long():
    too_long: list[str] = []
    for path in sorted(PACKAGE.glob("*.py")):
        text = path.read_text()
        lines = text.count("\n") + 1
        if lines > MAX_MODULE_LINES:
            too_long.append(f"{path.name}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > MAX_CLASS_LINES:
                    too_long.append(f"{path.name}: class {node.name} has {size} lines")
    assert not too_long, too_long
