"""``python -m shared.cli doctor`` over fakes: what it says about the settings."""

from __future__ import annotations

import io

from shared.cli import main
from shared.doctor import diagnose, report
from tests.fakes import TEST_ENV


def run(env: dict[str, str]) -> tuple[int, str]:
    out = io.StringIO()
    return report(diagnose(env), out), out.getvalue()


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


def test_a_missing_ca_bundle_is_a_finding_not_a_crash(monkeypatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/ca.pem")
    code, text = run({**TEST_ENV, "REQUESTS_CA_BUNDLE": "/nonexistent/ca.pem"})
    assert code == 1
    assert "REQUESTS_CA_BUNDLE names a file that does not exist" in text
    assert "discovery document" in text and "FAIL" in text
