"""``python -m shared.cli doctor`` against the local stack, as an operator runs it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from devstack.certs import PROJECT_ROOT
from devstack.stack import LocalStack

pytestmark = pytest.mark.e2e


def doctor(stack: LocalStack, **changes: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **stack.settings, **changes}
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", "doctor"], cwd=PROJECT_ROOT, env=env,
        capture_output=True, text=True, timeout=120, check=False,
    )


def test_a_working_deployment_passes_every_check(stack: LocalStack) -> None:
    result = doctor(stack)
    assert result.returncode == 0, result.stdout + result.stderr
    for what in ("settings read and valid", "discovery document", "redirect URI", "Table Storage answers",
                 "Queue Storage answers", "Key Vault answers"):
        assert what in result.stdout
    assert "FAIL" not in result.stdout
    assert stack.settings["MICROSOFT_CLIENT_SECRET"] not in result.stdout


def test_a_redirect_uri_the_app_registration_lacks_is_reported(stack: LocalStack) -> None:
    result = doctor(stack, PUBLIC_BASE_URL="https://connector.elsewhere.test")
    assert result.returncode == 1
    assert "does not list the redirect URI https://connector.elsewhere.test/api/auth/callback" in result.stdout
    assert "fix: add https://connector.elsewhere.test/api/auth/callback" in result.stdout


def test_an_unknown_client_id_and_an_unreachable_vault_are_reported(stack: LocalStack) -> None:
    result = doctor(stack, MICROSOFT_CLIENT_ID="11111111-2222-4333-8444-555555555555",
                    KEY_VAULT_URL="https://127.0.0.1:9")
    assert result.returncode == 1
    assert "does not know MICROSOFT_CLIENT_ID" in result.stdout
    assert "FAIL  Key Vault does not answer" in result.stdout
    assert "Table Storage answers" in result.stdout
