"""``python -m shared.cli doctor`` over fakes: what it says about the settings."""

from __future__ import annotations

import io
import json
from typing import Any
from urllib.parse import urlencode

from shared.cli import main
from shared.config import Settings
from shared.doctor import diagnose, report
from shared.errors import ConfigurationError
from tests.fakes import TEST_ENV, make_services


class Answer:
    def __init__(self, status: int, body: Any) -> None:
        self.status_code, self.ok, self._body = status, status < 400, body
        self.text = body if isinstance(body, str) else json.dumps(body)

    def json(self) -> Any:
        return self._body if not isinstance(self._body, str) else json.loads(self._body)


def identity_platform(authorize_page: str = "<html>sign in</html>") -> Any:
    """Stands in for the discovery document and the authorize page."""

    def get(url: str, **_: Any) -> Answer:
        if url.endswith("/.well-known/openid-configuration"):
            return Answer(200, {"authorization_endpoint": "https://login.example.test/authorize"})
        return Answer(200, authorize_page)

    return get


def unreachable(url: str, **_: Any) -> Answer:
    raise OSError("Could not find a suitable TLS CA certificate bundle")


def run(env: dict[str, str], http_get: Any = None) -> tuple[int, str]:
    out = io.StringIO()
    services = make_services(Settings.from_env(env)) if _parses(env) else None
    if services is not None:
        # MSAL's authorize URL carries the redirect URI; the fake's does not.
        identity, start = services.identity, services.identity.start_auth_code_flow

        def start_with_redirect(scopes: Any, redirect_uri: str, login_hint: str | None = None) -> Any:
            flow = start(scopes, redirect_uri, login_hint)
            flow["auth_uri"] += "&" + urlencode({"redirect_uri": redirect_uri})
            return flow

        identity.start_auth_code_flow = start_with_redirect
    return report(diagnose(env, services=services, http_get=http_get or identity_platform()), out), out.getvalue()


def _parses(env: dict[str, str]) -> bool:
    try:
        Settings.from_env(env)
    except ConfigurationError:
        return False
    return True


def test_a_missing_required_setting_is_named_with_what_to_do() -> None:
    env = {k: v for k, v in TEST_ENV.items() if k != "PUBLIC_BASE_URL"}
    code, text = run(env)
    assert code == 1
    assert "FAIL  setting PUBLIC_BASE_URL is not set" in text
    assert "fix: set PUBLIC_BASE_URL" in text


def test_a_malformed_setting_is_named() -> None:
    code, text = run({**TEST_ENV, "CONNECT_SESSION_MINUTES": "soon"})
    assert code == 1
    assert "CONNECT_SESSION_MINUTES" in text


def test_a_bad_tenant_list_is_named_and_no_secret_is_printed() -> None:
    code, text = run({**TEST_ENV, "ALLOWED_TENANT_IDS": "nope"})
    assert code == 1
    assert "ALLOWED_TENANT_IDS" in text
    assert TEST_ENV["MICROSOFT_CLIENT_SECRET"] not in text and TEST_ENV["CLIENT_STATE_KEY"] not in text


def test_the_cli_runs_doctor_even_without_settings(monkeypatch) -> None:
    for name in TEST_ENV:
        monkeypatch.delenv(name, raising=False)
    out, err = io.StringIO(), io.StringIO()
    assert main(["doctor"], out=out, err=err) == 1
    assert "setting MICROSOFT_CLIENT_ID is not set" in out.getvalue()


def test_a_missing_ca_bundle_is_a_finding_not_a_crash() -> None:
    code, text = run({**TEST_ENV, "REQUESTS_CA_BUNDLE": "/nonexistent/ca.pem"}, unreachable)
    assert code == 1
    assert "REQUESTS_CA_BUNDLE names a file that does not exist" in text
    assert "discovery document" in text and "FAIL" in text


def test_an_unregistered_redirect_uri_is_reported_with_the_uri_to_add() -> None:
    page = "<html>AADSTS50011: The redirect URI ... does not match</html>"
    code, text = run(dict(TEST_ENV), identity_platform(page))
    assert code == 1
    assert "fix: add https://connector.example.test/api/auth/callback under Authentication" in text


def test_the_adapters_without_a_probe_fail_their_check_but_the_identity_checks_pass() -> None:
    code, text = run(dict(TEST_ENV))
    assert "ok    discovery document" in text
    assert "ok    redirect URI https://connector.example.test/api/auth/callback" in text
    assert code == 1  # the fakes of storage and Key Vault have no probe
