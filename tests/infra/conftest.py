"""Fixtures of the infrastructure tests: the Bicep templates of ``infra/``, parsed once.

These tests need pycep-parser and checkov, which live in their own venv, ``.venv-infra``
(``requirements-infra.txt``), never in the app's. `make infra-check` runs them there, with
``--confcutdir`` so that the devstack fixtures of ``tests/conftest.py`` are not loaded:

    .venv-infra/bin/python -m pytest --confcutdir=tests/infra tests/infra

Collected by the app's venv (a plain ``pytest`` at the top), this directory is left out
and the report header says so, rather than failing on a missing parser.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

if importlib.util.find_spec("pycep") is None or importlib.util.find_spec("checkov") is None:
    collect_ignore_glob = ["test_*.py"]

    def pytest_report_header() -> str:
        return "tests/infra: not collected here (no pycep/checkov); run `make infra-check`"

else:
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
