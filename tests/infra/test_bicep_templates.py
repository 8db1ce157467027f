"""The Bicep templates describe the deployment the design asks for.

Each test reads the parsed templates (tests/infra/bicep.py) and asserts on their structure:
a broken template, a missing always-ready instance or a storage account that accepts shared
keys fails here, long before `azd up`.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared import config
from tests.infra.bicep import (
    BICEP_FILES,
    INFRA,
    ROOT,
    accessor_path,
    decorator,
    iter_strings,
    module_params,
    module_path,
    param_default,
    parse_bicep,
    resources_of_type,
    the_resource,
    unquoted,
)

# Built-in role definition ids, as Azure defines them
# (https://learn.microsoft.com/azure/role-based-access-control/built-in-roles).
STORAGE_BLOB_DATA_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
STORAGE_QUEUE_DATA_CONTRIBUTOR = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
STORAGE_QUEUE_DATA_MESSAGE_PROCESSOR = "8a0f0c08-91a1-4084-bc3d-661d67233fed"
STORAGE_TABLE_DATA_CONTRIBUTOR = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
KEY_VAULT_SECRETS_OFFICER = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"
MONITORING_METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_every_bicep_file_parses(path: Path) -> None:
    template = parse_bicep(path)
    assert template.get("resources") or template.get("modules"), f"{path.name} declares nothing"


def test_every_module_main_uses_exists_and_every_module_file_is_used(main: dict[str, Any]) -> None:
    used = {module_path(main, name) for name in main["modules"]}
    on_disk = {path.relative_to(INFRA).as_posix() for path in BICEP_FILES} - {"main.bicep"}
    assert used == on_disk


def test_main_deploys_at_subscription_scope_and_creates_the_resource_group(main: dict[str, Any]) -> None:
    assert main["globals"]["scope"]["value"] == "subscription"
    group = the_resource(main, "Microsoft.Resources/resourceGroups")
    assert "environmentName" in "".join(iter_strings(group["name"]))
    for name in main["modules"]:
        assert main["modules"][name]["config"]["scope"] == "rg", name


def test_main_takes_the_parameters_azd_provides(main: dict[str, Any]) -> None:
    for name in ("environmentName", "location", "principalId", "microsoftClientId"):
        assert name in main["parameters"], name
    parameters = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert parameters["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert parameters["location"]["value"] == "${AZURE_LOCATION}"
    assert parameters["principalId"]["value"] == "${AZURE_PRINCIPAL_ID}"
    assert parameters["microsoftClientId"]["value"] == "${MICROSOFT_CLIENT_ID}"
    assert set(parameters) <= set(main["parameters"]), "main.parameters.json names an unknown parameter"
    # An unset MICROSOFT_CLIENT_ID stops the deployment instead of starting an app that cannot sign in.
    assert decorator(main["parameters"]["microsoftClientId"], "min_length") == 1


def test_every_parameter_without_default_gets_a_value_from_azd(main: dict[str, Any]) -> None:
    mapped = set(json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"])
    for name, declaration in main["parameters"].items():
        if declaration.get("default") is not None:
            continue
        metadata = decorator(declaration, "metadata") or {}
        generated = metadata.get("azd", {}).get("type") == "generate"
        assert name in mapped or generated, f"azd would prompt for {name}"


def test_the_client_state_key_is_generated_once_by_azd_and_secure(main: dict[str, Any]) -> None:
    declaration = main["parameters"]["clientStateKey"]
    assert decorator(declaration, "secure")
    metadata = decorator(declaration, "metadata")
    assert metadata["azd"]["type"] == "generate"
    # shared/config.py refuses a CLIENT_STATE_KEY shorter than 32 characters.
    assert metadata["azd"]["config"]["length"] >= 32
    assert decorator(declaration, "min_length") >= 32


def test_azure_yaml_deploys_the_repository_as_a_python_function_app() -> None:
    project = yaml.safe_load((ROOT / "azure.yaml").read_text(encoding="utf-8"))
    assert project["name"]
    assert project["services"]["api"] == {"project": ".", "language": "python", "host": "function"}


def test_function_app_runs_python_311_on_flex_consumption(function_module: dict[str, Any]) -> None:
    plan = the_resource(function_module, "Microsoft.Web/serverfarms")
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    site = the_resource(function_module, "Microsoft.Web/sites")
    assert site["kind"] == "functionapp,linux"
    runtime = site["properties"]["functionAppConfig"]["runtime"]
    assert runtime == {"name": "python", "version": "3.11"}
    service_tag = site["tags"]["function"]["parameters"]["arg_2"]
    assert {unquoted(key): value for key, value in service_tag.items()} == {"azd-service-name": "serviceName"}
    assert param_default(function_module, "serviceName") == "api"


def test_http_functions_always_have_a_warm_instance(
    main: dict[str, Any], function_module: dict[str, Any]
) -> None:
    # Graph gives the validation handshake 10 s: a cold start must never be on that path.
    site = the_resource(function_module, "Microsoft.Web/sites")
    always_ready = site["properties"]["functionAppConfig"]["scaleAndConcurrency"]["alwaysReady"]
    http = [entry for entry in always_ready if entry["name"] == "http"]
    assert len(http) == 1
    count_param = http[0]["instanceCount"]
    assert decorator(function_module["parameters"][count_param], "min_value") >= 1
    passed = module_params(main, "functionApp")[count_param]
    assert param_default(main, passed) >= 1
    assert decorator(main["parameters"][passed], "min_value") >= 1


def test_function_app_deploys_and_reaches_storage_by_identity(function_module: dict[str, Any]) -> None:
    site = the_resource(function_module, "Microsoft.Web/sites")
    assert site["identity"]["type"] == "UserAssigned"
    deployment = site["properties"]["functionAppConfig"]["deployment"]["storage"]
    assert deployment["type"] == "blobContainer"
    assert deployment["authentication"] == {
        "type": "UserAssignedIdentity",
        "userAssignedIdentityResourceId": "identityId",
    }
    settings = the_resource(function_module, "Microsoft.Web/sites/config")
    platform = settings["properties"]["function"]["parameters"]["arg_2"]
    assert platform["AzureWebJobsStorage__accountName"] == "storageAccountName"
    assert platform["AzureWebJobsStorage__credential"] == "managedidentity"
    assert platform["AzureWebJobsStorage__clientId"] == "identityClientId"
    # The app's adapters use DefaultAzureCredential: with a user-assigned identity only,
    # AZURE_CLIENT_ID tells it which one.
    assert platform["AZURE_CLIENT_ID"] == "identityClientId"
    assert not any("AccountKey=" in text for text in iter_strings(function_module))


def test_function_app_accepts_only_https_with_tls_12_and_no_ftp(function_module: dict[str, Any]) -> None:
    site = the_resource(function_module, "Microsoft.Web/sites")
    assert site["properties"]["httpsOnly"] is True
    site_config = site["properties"]["siteConfig"]
    assert site_config["minTlsVersion"] == "1.2"
    assert site_config["ftpsState"] == "Disabled"


def test_key_vault_references_resolve_with_the_app_identity(
    main: dict[str, Any], function_module: dict[str, Any]
) -> None:
    site = the_resource(function_module, "Microsoft.Web/sites")
    assert site["properties"]["keyVaultReferenceIdentity"] == "identityId"
    app_settings = module_params(main, "functionApp")["appSettings"]
    for name in ("MICROSOFT_CLIENT_SECRET", "CLIENT_STATE_KEY"):
        assert app_settings[name].startswith("@Microsoft.KeyVault(SecretUri="), name
        assert app_settings[name].endswith(")"), name
    assert accessor_path(app_settings["KEY_VAULT_URL"]) == "keyVault.outputs.uri"


def test_public_base_url_is_the_app_own_https_host(function_module: dict[str, Any]) -> None:
    settings = the_resource(function_module, "Microsoft.Web/sites/config")
    platform = settings["properties"]["function"]["parameters"]["arg_2"]
    assert platform["PUBLIC_BASE_URL"] == "https://${site.properties.defaultHostName}"


def test_telemetry_goes_to_application_insights_by_identity(
    templates: dict[str, dict[str, Any]], function_module: dict[str, Any]
) -> None:
    insights = the_resource(templates["app/monitoring.bicep"], "Microsoft.Insights/components")
    assert insights["properties"]["DisableLocalAuth"] is True
    assert insights["properties"]["WorkspaceResourceId"]
    settings = the_resource(function_module, "Microsoft.Web/sites/config")
    platform = settings["properties"]["function"]["parameters"]["arg_2"]
    assert platform["APPLICATIONINSIGHTS_CONNECTION_STRING"]
    assert platform["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"].endswith("Authorization=AAD")


def test_storage_refuses_shared_keys_plain_http_and_anonymous_blobs(storage_module: dict[str, Any]) -> None:
    account = the_resource(storage_module, "Microsoft.Storage/storageAccounts")
    properties = account["properties"]
    assert properties["allowSharedKeyAccess"] is False
    assert properties["supportsHttpsTrafficOnly"] is True
    assert properties["minimumTlsVersion"] == "TLS1_2"
    assert properties["allowBlobPublicAccess"] is False
    container = the_resource(storage_module, "Microsoft.Storage/storageAccounts/blobServices/containers")
    assert container["properties"]["publicAccess"] == "None"


def _names_the_code_uses(suffix: str) -> set[str]:
    """Values of the module-level ``*_TABLE`` / ``*_QUEUE`` string constants under shared/."""
    names = set()
    for path in (ROOT / "shared").rglob("*.py"):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.AnnAssign)
                else []
            )
            value = getattr(node, "value", None)
            for target in targets:
                if (
                    isinstance(target, ast.Name)
                    and target.id.endswith(suffix)
                    and isinstance(value, ast.Constant)
                    and isinstance(value.value, str)
                ):
                    names.add(value.value)
    return names


def test_storage_creates_the_queues_and_tables_the_code_uses(storage_module: dict[str, Any]) -> None:
    variables = storage_module["variables"]
    code_queues = _names_the_code_uses("_QUEUE")
    assert {config.NOTIFICATION_QUEUE, config.MAIL_EVENT_QUEUE} <= code_queues
    # The Functions host moves a message of a queue trigger that keeps failing to <queue>-poison.
    poison = {f"{queue}-poison" for queue in (config.NOTIFICATION_QUEUE, config.MAIL_SYNC_QUEUE)}
    assert set(variables["queueNames"]["value"]) == code_queues | poison
    code_tables = _names_the_code_uses("_TABLE")
    assert {config.ACCOUNTS_TABLE, config.SUBSCRIPTIONS_TABLE, config.AUTHFLOWS_TABLE} <= code_tables
    assert set(variables["tableNames"]["value"]) == code_tables
    queues = storage_module["resources"]["queues"]["config"]["loop_type"]["detail"]
    tables = storage_module["resources"]["tables"]["config"]["loop_type"]["detail"]
    assert queues["array_name"] == "queueNames"
    assert tables["array_name"] == "tableNames"


def test_key_vault_authorises_by_rbac_and_keeps_deleted_secrets(keyvault_module: dict[str, Any]) -> None:
    vault = the_resource(keyvault_module, "Microsoft.KeyVault/vaults")
    properties = vault["properties"]
    assert properties["enableRbacAuthorization"] is True
    assert properties["enableSoftDelete"] is True
    assert properties["enablePurgeProtection"] is True
    assert "accessPolicies" not in properties
    retention = properties["softDeleteRetentionInDays"]
    assert param_default(keyvault_module, retention) >= 7


def test_key_vault_holds_the_app_secrets_under_the_names_the_references_use(
    keyvault_module: dict[str, Any],
) -> None:
    secrets = resources_of_type(keyvault_module, "Microsoft.KeyVault/vaults/secrets")
    names = {keyvault_module["variables"][body["name"]]["value"] for body in secrets.values()}
    assert names == {"microsoft-client-secret", "client-state-key", "client-state-key-previous"}
    # The previous clientState key exists only during a rotation.
    assert keyvault_module["resources"]["clientStateKeyPreviousSecret"]["config"]["condition"] is not None
    outputs = "".join(
        iter_strings(
            [keyvault_module["outputs"]["clientSecretUri"], keyvault_module["outputs"]["clientStateKeyUri"]]
        )
    )
    assert "clientSecretName" in outputs and "clientStateKeyName" in outputs
    # The client secret is written only when given: a re-provision keeps the operator's value.
    assert keyvault_module["resources"]["clientSecret"]["config"]["condition"] is not None


def _role_ids(rbac: dict[str, Any]) -> dict[str, str]:
    return rbac["variables"]["roles"]["value"]


def _assignments(rbac: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(scope, principal parameter, role id, conditional) of every role assignment."""
    roles = _role_ids(rbac)
    storage_roles = [
        roles[item["operator"]["operands"]["operand_2"]]
        for item in rbac["variables"]["storageRoles"]["value"]
    ]
    found = []
    for name, resource in rbac["resources"].items():
        if resource["type"] != "Microsoft.Authorization/roleAssignments":
            continue
        wrapper = resource["config"]
        body = wrapper.get("config", wrapper)
        conditional = wrapper.get("condition") is not None
        role = body["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]
        principal = body["properties"]["principalId"]
        if "loop_type" in wrapper:
            assert wrapper["loop_type"]["detail"]["array_name"] == "storageRoles", name
            found += [(body["scope"], principal, role_id, conditional) for role_id in storage_roles]
        else:
            role_id = roles[role["operator"]["operands"]["operand_2"]]
            found.append((body["scope"], principal, role_id, conditional))
    return found


def test_role_ids_are_the_built_in_roles_their_names_say(rbac_module: dict[str, Any]) -> None:
    assert _role_ids(rbac_module) == {
        "storageBlobDataOwner": STORAGE_BLOB_DATA_OWNER,
        "storageQueueDataContributor": STORAGE_QUEUE_DATA_CONTRIBUTOR,
        "storageQueueDataMessageProcessor": STORAGE_QUEUE_DATA_MESSAGE_PROCESSOR,
        "storageTableDataContributor": STORAGE_TABLE_DATA_CONTRIBUTOR,
        "keyVaultSecretsOfficer": KEY_VAULT_SECRETS_OFFICER,
        "monitoringMetricsPublisher": MONITORING_METRICS_PUBLISHER,
    }


def test_app_identity_gets_the_data_roles_it_needs(main: dict[str, Any], rbac_module: dict[str, Any]) -> None:
    assert accessor_path(module_params(main, "rbac")["appPrincipalId"]) == "identity.outputs.principalId"
    app = {
        (scope, role)
        for scope, principal, role, conditional in _assignments(rbac_module)
        if principal == "appPrincipalId"
    }
    assert app == {
        ("storage", STORAGE_BLOB_DATA_OWNER),
        ("storage", STORAGE_QUEUE_DATA_CONTRIBUTOR),
        ("storage", STORAGE_TABLE_DATA_CONTRIBUTOR),
        ("vault", KEY_VAULT_SECRETS_OFFICER),
        ("applicationInsights", MONITORING_METRICS_PUBLISHER),
    }


def test_deploying_developer_can_run_the_app_locally_against_the_cloud(
    main: dict[str, Any], rbac_module: dict[str, Any]
) -> None:
    assert module_params(main, "rbac")["developerPrincipalId"] == "principalId"
    developer = [a for a in _assignments(rbac_module) if a[1] == "developerPrincipalId"]
    assert {(scope, role) for scope, _, role, _ in developer} == {
        ("storage", STORAGE_BLOB_DATA_OWNER),
        ("storage", STORAGE_QUEUE_DATA_CONTRIBUTOR),
        ("storage", STORAGE_TABLE_DATA_CONTRIBUTOR),
        ("vault", KEY_VAULT_SECRETS_OFFICER),
    }
    assert all(conditional for *_, conditional in developer), "an empty principalId must grant nothing"


def test_an_event_consumer_may_only_process_the_mail_events_queue(rbac_module: dict[str, Any]) -> None:
    consumer = [a for a in _assignments(rbac_module) if a[1] == "eventConsumerPrincipalId"]
    assert [(scope, role) for scope, _, role, _ in consumer] == [
        ("mailEventQueue", STORAGE_QUEUE_DATA_MESSAGE_PROCESSOR)
    ]
    queue = rbac_module["resources"]["mailEventQueue"]
    assert queue["existing"] and queue["config"]["name"] == config.MAIL_EVENT_QUEUE


def test_the_app_starts_only_after_its_roles_exist(main: dict[str, Any]) -> None:
    assert "rbac" in main["modules"]["functionApp"]["config"]["dependsOn"]


REQUIRED_OUTPUTS = {
    "PUBLIC_BASE_URL",
    "KEY_VAULT_URL",
    "AZURE_STORAGE_ACCOUNT_NAME",
    "AZURE_FUNCTION_APP_NAME",
    "AZURE_RESOURCE_GROUP",
    "AZURE_LOCATION",
}


def test_outputs_are_upper_snake_for_azd(main: dict[str, Any]) -> None:
    outputs = set(main["outputs"])
    assert REQUIRED_OUTPUTS <= outputs
    assert all(name == name.upper() and " " not in name for name in outputs)
    for name, output in main["outputs"].items():
        assert not decorator(output, "secure"), f"output {name} would land in .azure/<env>/.env"
