"""The core stays layered: no import circle in ``shared``, adapters that know only ports,
models, errors, settings and each other, and no module or class grown too big."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.layering import import_circles, too_long

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT / "shared"
MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 250
# What an adapter may import from the core: the ports it implements and what they speak of.
# The ports are ``shared.ports`` and the modules holding the mail side's and the drive's
# (named in ``shared.ports`` too). ``shared.ledger`` is one of them: the mail ledger's table
# name and ``LeaseLostError`` beside the port's records, a module of definitions that
# imports nothing but errors and ports (checked below), so the ledger's adapter and the sync
# share them without the adapter knowing the sync.
PORTS = {"shared.ports", "shared.mail_ports", "shared.drive_ports"}
MODELS_LIKE = PORTS | {"shared.models", "shared.errors", "shared.config", "shared.ledger"}
ADAPTER_MAY_IMPORT = MODELS_LIKE
# Allowances over the limits: none. A module or class that outgrows them is split, not listed here.
OVERSIZED: dict[str, int] = {}
# The one accepted back edge: the core names the ``Services`` bundle in type hints only
# (``if TYPE_CHECKING: from shared.bootstrap import Services``); the wiring imports the core.
TYPE_ONLY_ALLOWED = "shared.bootstrap"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(SHARED.rglob("*.py"))}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside ``if TYPE_CHECKING:`` blocks."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            inside.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    return inside


def _imports(path: Path, known: set[str]) -> dict[str, bool]:
    """The modules of ``shared`` that ``path`` imports (at the top, in a function or for
    type checking alone), each with whether the import is for type checking only."""
    tree = ast.parse(path.read_text())
    type_only = _type_checking_nodes(tree)
    found: dict[str, bool] = {}

    def add(name: str, node: ast.AST) -> None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name:
            found[name] = found.get(name, True) and id(node) in type_only

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:  # ``from shared import bootstrap`` names a module
                add(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module, node)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = _imports(path, set(modules))
        graph[name] = {
            target
            for target, type_only in edges.items()
            if target != name and not (type_only and target == TYPE_ONLY_ALLOWED)
        }
    return graph


def test_shared_has_no_import_circle() -> None:
    assert import_circles(_graph()) == []


def test_adapters_import_no_domain_or_service_module() -> None:
    graph = _graph()
    wrong = {
        f"{module} imports {target}"
        for module, targets in graph.items()
        if module.startswith("shared.adapters.")
        for target in targets
        if not (target in ADAPTER_MAY_IMPORT or target.startswith("shared.adapters"))
    }
    assert sorted(wrong) == []


def test_the_modules_adapters_may_import_import_only_each_other() -> None:
    graph = _graph()
    wrong = {f"{m} imports {t}" for m in MODELS_LIKE for t in graph[m] if t not in MODELS_LIKE}
    assert sorted(wrong) == []


def test_the_rules_see_what_they_check() -> None:
    # Guards against a checker that reads nothing: the core's known edges are found.
    graph = _graph()
    assert "shared.ports" in graph["shared.adapters.graph"]
    assert "shared.retry" in graph["shared.sync"]
    assert TYPE_ONLY_ALLOWED in graph["shared.cli"]  # a real import, not type-only


def test_no_module_or_class_in_shared_is_too_long() -> None:
    found = too_long(_modules(), max_module_lines=MAX_MODULE_LINES, max_class_lines=MAX_CLASS_LINES, allowed=OVERSIZED)
    assert found == []


def test_the_length_rule_sees_a_long_class(tmp_path: Path) -> None:
    # Guards against a checker that measures nothing: a class of 251 lines is found.
    module = tmp_path / "long.py"
    module.write_text("class Long:\n" + "    x = 1\n" * 250)
    assert too_long({"long": module}, max_module_lines=MAX_MODULE_LINES, max_class_lines=MAX_CLASS_LINES) == [
        "long: class Long has 251 lines"
    ]
