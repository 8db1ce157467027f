"""The embedding's settings: return origins, session lifetime, anonymous connect, tenants."""

from __future__ import annotations

import pytest

from shared.errors import ConfigurationError
from tests.fakes import make_settings


def test_the_defaults_lock_the_connect_down() -> None:
    settings = make_settings()
    assert settings.allowed_return_origins == frozenset()
    assert settings.connect_session_minutes == 30
    assert settings.allow_anonymous_connect is False
    assert settings.allowed_tenant_ids == frozenset()


def test_origins_are_normalised() -> None:
    settings = make_settings(
        ALLOWED_RETURN_ORIGINS=" https://App.Example.com:443/ , http://localhost:3000,https://b.example.com:8443"
    )
    assert settings.allowed_return_origins == {
        "https://app.example.com", "http://localhost:3000", "https://b.example.com:8443",
    }


@pytest.mark.parametrize(
    "value",
    ["https://app.example.com/path", "http://app.example.com", "app.example.com", "https://a.example.com?x=1",
     "https://user@app.example.com", "ftp://app.example.com"],
)
def test_a_value_that_is_not_an_allowed_origin_stops_the_app(value: str) -> None:
    with pytest.raises(ConfigurationError, match="ALLOWED_RETURN_ORIGINS"):
        make_settings(ALLOWED_RETURN_ORIGINS=value)


def test_tenant_ids_must_be_guids_and_are_lower_cased() -> None:
    settings = make_settings(ALLOWED_TENANT_IDS="72F988BF-86F1-41AF-91AB-2D7CD011DB47, ")
    assert settings.allowed_tenant_ids == {"72f988bf-86f1-41af-91ab-2d7cd011db47"}
    with pytest.raises(ConfigurationError, match="ALLOWED_TENANT_IDS"):
        make_settings(ALLOWED_TENANT_IDS="contoso.onmicrosoft.com")


@pytest.mark.parametrize(("name", "value"), [("CONNECT_SESSION_MINUTES", "0"), ("ALLOW_ANONYMOUS_CONNECT", "maybe")])
def test_malformed_values_name_their_setting(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        make_settings(**{name: value})
