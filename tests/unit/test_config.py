"""Settings are read once, validated, and a bad one is named in the error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.config import SETTING_DEFAULTS, Settings
from shared.errors import ConfigurationError

EXAMPLE = json.loads((Path(__file__).resolve().parents[2] / "local.settings.json.example").read_text())["Values"]


def test_the_example_settings_work_as_they_are() -> None:
    settings = Settings.from_env(EXAMPLE)
    assert settings.redirect_uri == "http://127.0.0.1:7071/api/auth/callback"
    assert settings.notification_url == "http://127.0.0.1:7071/api/notifications"
    assert settings.authority == "https://127.0.0.1:8444/common"
    assert settings.scopes == ("User.Read", "Mail.Read")


@pytest.mark.parametrize("name", [n for n, default in SETTING_DEFAULTS.items() if default is None])
def test_a_missing_required_setting_is_named(name: str) -> None:
    env = {k: v for k, v in EXAMPLE.items() if k != name}
    with pytest.raises(ConfigurationError, match=name):
        Settings.from_env(env)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KEY_VAULT_URL", "http://vault.example"),
        ("GRAPH_API_ENDPOINT", "not a url"),
        ("RENEWAL_WINDOW_MINUTES", "soon"),
        ("CATCHUP_AFTER_MINUTES", "0"),
        ("MAIL_ACTIONS_ENABLED", "perhaps"),
        ("CLIENT_STATE_KEY", "short"),
        ("GRAPH_SCOPES", "Mail.Read offline_access"),
        ("POST_CONNECT_REDIRECT_URL", "javascript:alert(1)"),
    ],
)
def test_a_malformed_setting_is_named(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        Settings.from_env({**EXAMPLE, name: value})


def test_defaults_apply_and_mail_actions_widen_the_scopes() -> None:
    env = {k: v for k, v in EXAMPLE.items() if SETTING_DEFAULTS.get(k) is None}
    settings = Settings.from_env({**env, "MAIL_ACTIONS_ENABLED": "true"})
    assert settings.tenant_id == "common"
    assert settings.graph_endpoint == "https://graph.microsoft.com/v1.0"
    assert settings.scopes == ("User.Read", "Mail.ReadWrite")


def test_storage_by_managed_identity() -> None:
    env = {k: v for k, v in EXAMPLE.items() if k != "AzureWebJobsStorage"}
    settings = Settings.from_env({**env, "AzureWebJobsStorage__accountName": "stconnector"})
    assert settings.storage_connection == "identity:stconnector"


def test_secrets_are_not_in_the_repr() -> None:
    text = repr(Settings.from_env(EXAMPLE))
    assert EXAMPLE["MICROSOFT_CLIENT_SECRET"] not in text and EXAMPLE["CLIENT_STATE_KEY"] not in text
