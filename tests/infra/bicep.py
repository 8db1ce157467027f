"""Reading the Bicep templates of ``infra/`` with pycep, the parser checkov uses.

Bicep's own compiler cannot be installed on a machine that reaches only PyPI, npm and
Debian, so the templates are parsed with pycep and the tests walk the parsed structure.
pycep renders an identifier and a string literal alike, as a plain string: ``location``
and ``'location'`` both become ``"location"``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

try:
    from pycep import BicepParser
except ImportError as missing:  # pragma: no cover - a message for the wrong venv
    raise ImportError(
        "tests/infra need pycep-parser and checkov: run them with .venv-infra "
        "(pip install -r requirements-infra.txt), not with the app's venv"
    ) from missing

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))


@functools.cache
def _parser() -> BicepParser:
    # Building the LALR tables takes seconds: one parser for the session.
    return BicepParser()


def parse_bicep(path: Path) -> dict[str, Any]:
    return _parser().parse(text=path.read_text(encoding="utf-8"))


def unquoted(key: str) -> str:
    """An object key as Bicep means it: pycep keeps the quotes of ``'azd-service-name'``."""
    return key[1:-1] if len(key) >= 2 and key[0] == key[-1] == "'" else key


def resource_body(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource's own body, under any ``if`` condition or ``for`` loop pycep wraps it in."""
    body = resource["config"]
    while "config" in body and ("condition" in body or "loop_type" in body):
        body = body["config"]
    return body


def resources_of_type(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    """Symbolic name -> body of every (non-``existing``) resource of that type."""
    return {
        name: resource_body(resource)
        for name, resource in template.get("resources", {}).items()
        if resource["type"] == resource_type and not resource["existing"]
    }


def the_resource(template: dict[str, Any], resource_type: str) -> dict[str, Any]:
    found = resources_of_type(template, resource_type)
    assert len(found) == 1, f"expected one {resource_type}, found {sorted(found)}"
    return next(iter(found.values()))


def decorator(declaration: dict[str, Any], kind: str) -> Any:
    for item in declaration.get("decorators", []):
        if item["type"] == kind:
            return item.get("argument", True)
    return None


def iter_strings(node: Any) -> Iterator[str]:
    """Every string anywhere in a parsed expression (keys excluded)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from iter_strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from iter_strings(value)


def module_params(template: dict[str, Any], module_name: str) -> dict[str, Any]:
    """The ``params`` a template passes to one of its modules."""
    return template["modules"][module_name]["config"]["params"]


def module_path(template: dict[str, Any], module_name: str) -> str:
    return template["modules"][module_name]["detail"]["path"]


def param_default(template: dict[str, Any], name: str) -> Any:
    return template["parameters"][name].get("default")


def accessor_path(node: Any) -> str:
    """``identity.outputs.principalId`` for pycep's nested property accessors; a name as is."""
    if isinstance(node, str):
        return node
    operator = node["operator"]
    assert operator["type"] == "property_accessor", operator["type"]
    operands = operator["operands"]
    return f"{accessor_path(operands['operand_1'])}.{accessor_path(operands['operand_2'])}"
