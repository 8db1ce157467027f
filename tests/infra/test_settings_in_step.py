"""The settings the code reads, the local example and the Azure app settings stay in step.

Three lists name the same settings: ``SETTING_DEFAULTS`` in shared/config.py (read here, as
the app reads it), the "Values" of local.settings.json.example, and the app settings the
Bicep gives the Function App. A setting added to one and forgotten in another fails here,
in either direction. The only differences are the documented ones below.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.config import SETTING_DEFAULTS
from tests.infra.bicep import ROOT, module_params, param_default, the_resource, unquoted

# In Azure, not locally: the identity-based form of AzureWebJobsStorage
# (https://learn.microsoft.com/azure/azure-functions/functions-reference#connecting-to-host-storage-with-an-identity),
# the identity DefaultAzureCredential picks (azure-identity reads AZURE_CLIENT_ID), and the
# telemetry settings the Functions host reads.
CLOUD_ONLY = {
    "AzureWebJobsStorage__accountName": "AzureWebJobsStorage by managed identity",
    "AzureWebJobsStorage__credential": "AzureWebJobsStorage by managed identity",
    "AzureWebJobsStorage__clientId": "AzureWebJobsStorage by the user-assigned identity",
    "AZURE_CLIENT_ID": "DefaultAzureCredential's choice of the user-assigned identity",
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "read by the Functions host",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "read by the Functions host: telemetry by identity",
}

# Locally, not in Azure: points the SDKs at the devstack's CA.
LOCAL_ONLY = {"REQUESTS_CA_BUNDLE": "devstack CA, local runs only"}

# Read by the Python worker (and the devhost), not by the code: in both places, always on.
WORKER_ONLY = {"PYTHON_ENABLE_INIT_INDEXING": "HTTP streams need the worker's init indexing (functions/http.py)"}

# Read by the code, carried differently in Azure.
CARRIED_OTHERWISE = {
    "AzureWebJobsStorage": "AzureWebJobsStorage__accountName (+ __credential, __clientId)",
    "FUNCTIONS_WORKER_RUNTIME": "functionAppConfig.runtime.name: Flex Consumption rejects the app setting",
}


@pytest.fixture(scope="module")
def example_settings() -> dict[str, str]:
    document = json.loads((ROOT / "local.settings.json.example").read_text(encoding="utf-8"))
    return document["Values"]


@pytest.fixture(scope="module")
def product_settings(main: dict[str, Any]) -> dict[str, Any]:
    """The settings main.bicep passes to the function module, by name."""
    return {unquoted(key): value for key, value in module_params(main, "functionApp")["appSettings"].items()}


@pytest.fixture(scope="module")
def platform_settings(function_module: dict[str, Any]) -> dict[str, Any]:
    """The settings function.bicep adds where the identity and the host name are known."""
    settings = the_resource(function_module, "Microsoft.Web/sites/config")
    assert settings["name"] == "appsettings"
    union = settings["properties"]["function"]
    assert union["type"] == "union"
    product, platform = union["parameters"]["arg_1"], union["parameters"]["arg_2"]
    assert product == "appSettings", "the product settings from main.bicep must reach the app"
    return {unquoted(key): value for key, value in platform.items()}


@pytest.fixture(scope="module")
def bicep_settings(product_settings: dict[str, Any], platform_settings: dict[str, Any]) -> set[str]:
    overlap = set(product_settings) & set(platform_settings)
    assert not overlap, f"set twice, the platform value silently wins: {sorted(overlap)}"
    return set(product_settings) | set(platform_settings)


def test_local_example_names_every_setting_the_code_reads(example_settings: dict[str, str]) -> None:
    assert set(example_settings) - set(LOCAL_ONLY) - set(WORKER_ONLY) == set(SETTING_DEFAULTS)


def test_bicep_sets_every_setting_the_code_reads_and_nothing_else(bicep_settings: set[str]) -> None:
    expected = (set(SETTING_DEFAULTS) - set(CARRIED_OTHERWISE)) | set(CLOUD_ONLY) | set(WORKER_ONLY)
    missing = expected - bicep_settings
    unknown = bicep_settings - expected
    assert not missing, f"read by the code, not set in Azure: {sorted(missing)}"
    assert not unknown, f"set in Azure, read by nobody (or add it to shared/config.py): {sorted(unknown)}"


def test_the_documented_exceptions_are_still_true(
    example_settings: dict[str, str], bicep_settings: set[str], function_module: dict[str, Any]
) -> None:
    assert set(CARRIED_OTHERWISE) <= set(SETTING_DEFAULTS)
    assert not set(CARRIED_OTHERWISE) & bicep_settings
    assert not set(LOCAL_ONLY) & (bicep_settings | set(SETTING_DEFAULTS))
    assert set(LOCAL_ONLY) <= set(example_settings)
    assert not set(CLOUD_ONLY) & (set(example_settings) | set(SETTING_DEFAULTS))
    assert set(WORKER_ONLY) <= set(example_settings) & bicep_settings
    assert not set(WORKER_ONLY) & set(SETTING_DEFAULTS)
    site = the_resource(function_module, "Microsoft.Web/sites")
    assert (
        site["properties"]["functionAppConfig"]["runtime"]["name"]
        == SETTING_DEFAULTS["FUNCTIONS_WORKER_RUNTIME"]
    )


def test_bicep_defaults_are_the_code_defaults(main: dict[str, Any], product_settings: dict[str, Any]) -> None:
    for name, default in SETTING_DEFAULTS.items():
        if name in CARRIED_OTHERWISE or name not in product_settings:
            continue
        value = product_settings[name]
        if default is None:
            # Required: a parameter without default, a Key Vault reference or a module output.
            if isinstance(value, str) and value in main["parameters"]:
                assert param_default(main, value) is None, f"{name} is required: its parameter has no default"
        elif default == "" and _optional_reference(value) is not None:
            # empty(param) ? '' : '@Microsoft.KeyVault(...)': a secret that is usually unset.
            assert param_default(main, _optional_reference(value)) == "", name
        else:
            assert isinstance(value, str) and value in main["parameters"], (
                f"{name} is not a parameter of main.bicep"
            )
            assert param_default(main, value) == default, name


def _optional_reference(value: Any) -> str | None:
    """The parameter of ``empty(param) ? '' : '@Microsoft.KeyVault(...)'``, else None."""
    operands = value.get("operator", {}).get("operands", {}) if isinstance(value, dict) else {}
    condition = operands.get("condition", {}).get("function", {})
    if (
        condition.get("type") == "empty"
        and operands.get("true_value") == ""
        and str(operands.get("false_value", "")).startswith("@Microsoft.KeyVault(")
    ):
        return str(condition["parameters"]["item_to_test"])
    return None


def test_local_example_values_match_the_code_defaults(example_settings: dict[str, str]) -> None:
    # Values that differ on purpose locally: the devstack stands in for Microsoft's hosts;
    # the local start page and `make demo` connect without a connect session.
    local_overrides = {"MICROSOFT_AUTHORITY_HOST", "GRAPH_API_ENDPOINT", "ALLOW_ANONYMOUS_CONNECT"}
    for name, default in SETTING_DEFAULTS.items():
        if default is not None and name not in local_overrides:
            assert example_settings[name] == default, name
    assert example_settings["ALLOW_ANONYMOUS_CONNECT"] == "true"
    assert SETTING_DEFAULTS["ALLOW_ANONYMOUS_CONNECT"] == "false"
