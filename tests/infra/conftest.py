"""Fixtures of the infrastructure tests: the Bicep templates of ``infra/``, parsed once.

These tests run under ``.venv-infra`` (pycep-parser and checkov, pinned in
``requirements-infra.txt``), never under the app's venv, and with ``--confcutdir`` so that
the devstack fixtures of ``tests/conftest.py`` are not loaded:

    .venv-infra/bin/python -m pytest --confcutdir=tests/infra tests/infra
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.infra.bicep import BICEP_FILES, INFRA, parse_bicep


@pytest.fixture(scope="session")
def templates() -> dict[str, dict[str, Any]]:
    """Every .bicep file under infra/, by path relative to infra/ ("main.bicep", "app/storage.bicep")."""
    return {path.relative_to(INFRA).as_posix(): parse_bicep(path) for path in BICEP_FILES}


@pytest.fixture(scope="session")
def main(templates: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return templates["main.bicep"]


@pytest.fixture(scope="session")
def function_module(templates: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return templates["app/function.bicep"]


@pytest.fixture(scope="session")
def storage_module(templates: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return templates["app/storage.bicep"]


@pytest.fixture(scope="session")
def keyvault_module(templates: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return templates["app/keyvault.bicep"]


@pytest.fixture(scope="session")
def rbac_module(templates: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return templates["app/rbac.bicep"]
