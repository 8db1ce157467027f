"""The simulator's package stays layered: no import circle (type-only imports counted), no
module or class grown too big."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.layering import import_circles, too_long

PACKAGE = Path(__file__).resolve().parents[2] / "devstack" / "graphsim"
NAME = "devstack.graphsim"
MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 250


def _local_imports(path: Path, known: set[str]) -> set[str]:
    """Modules of the package that ``path`` imports, at the top, in a function or in a
    TYPE_CHECKING block: relative (``from . import mailbox``, ``from .state import X``) or
    absolute (``from devstack.graphsim import mailbox``, ``import devstack.graphsim.state``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names if alias.name.startswith(f"{NAME}.")]
            found.update(name.split(".")[2] for name in names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 1:
                inside = module
            elif node.level == 0 and (module == NAME or module.startswith(f"{NAME}.")):
                inside = module.removeprefix(NAME).lstrip(".")
            else:
                continue
            if inside:
                found.add(inside.split(".")[0])
            else:  # ``from . import x``: x is a module, or a name of the package's __init__
                found.update(alias.name if alias.name in known else "__init__" for alias in node.names)
    found.discard(path.stem)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    return {p.stem: _local_imports(p, modules) for p in PACKAGE.glob("*.py")}


def test_the_package_has_no_import_circle() -> None:
    assert import_circles(_graph()) == []


def test_the_import_rule_sees_every_form_of_import() -> None:
    # Guards against a checker that reads nothing: the package's known edges are found.
    graph = _graph()
    assert "mailbox" in graph["control"]  # from . import mailbox
    assert "server" in graph["__init__"]  # from .server import GraphSimulator


def test_no_module_or_class_is_too_long() -> None:
    modules = {p.name: p for p in sorted(PACKAGE.glob("*.py"))}
    assert too_long(modules, max_module_lines=MAX_MODULE_LINES, max_class_lines=MAX_CLASS_LINES) == []
