"""The operators' command line over fakes: accounts list/show/disconnect, device-code connect."""

from __future__ import annotations

import io
import json

import pytest

from shared.cli import main
from shared.models import AccountStatus, ClientKind
from tests.fakes import FakeUser, make_services


@pytest.fixture
def services():
    return make_services()


def run(services, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), services=services, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def device_connect(services, user: FakeUser) -> dict:
    services.identity.next_user = user
    services.graph.users[user.account_id] = {"id": user.object_id, "userPrincipalName": user.username}
    code, out, err = run(services, "connect", "--device-code")
    assert code == 0, err
    assert "ABCD-EFGH" in err  # the user is told where to sign in
    return json.loads(out)


def test_device_code_connects_a_public_client_account(services):
    shown = device_connect(services, FakeUser("oid-1", "tenant-1", "adele@contoso.test"))
    assert shown["id"] == "oid-1.tenant-1"
    assert shown["clientKind"] == "public"
    assert services.accounts.get("oid-1.tenant-1").client_kind == ClientKind.PUBLIC
    assert services.graph.for_account("oid-1.tenant-1")


def test_list_show_and_disconnect(services):
    for n in range(3):
        device_connect(services, FakeUser(f"oid-{n}", "tenant-1", f"user{n}@contoso.test"))

    code, out, _ = run(services, "accounts", "list", "--size", "2", "--all")
    assert code == 0
    assert [a["id"] for a in json.loads(out)["accounts"]] == [
        "oid-0.tenant-1",
        "oid-1.tenant-1",
        "oid-2.tenant-1",
    ]

    code, out, _ = run(services, "accounts", "show", "oid-1.tenant-1")
    assert code == 0 and json.loads(out)["user"] == "user1@contoso.test"

    code, out, _ = run(services, "accounts", "disconnect", "oid-1.tenant-1")
    assert code == 0 and json.loads(out)["status"] == "disconnected"
    assert services.accounts.get("oid-1.tenant-1").status == AccountStatus.DISCONNECTED


def test_an_unknown_account_exits_1_with_a_message(services):
    code, out, err = run(services, "accounts", "show", "nobody.nowhere")
    assert code == 1 and out == "" and "does not exist" in err


def test_a_declined_device_sign_in_exits_1(services):
    services.identity.redeem_error = "authorization_declined"
    code, _, err = run(services, "connect", "--device-code")
    assert code == 1 and "authorization_declined" in err


def test_settings_come_from_a_local_settings_file(tmp_path, monkeypatch):
    from shared import bootstrap
    from tests.fakes import TEST_ENV

    for name in TEST_ENV:
        monkeypatch.setenv(name, "")  # recorded, so that the test's values are undone after it
        monkeypatch.delenv(name)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"Values": {**TEST_ENV, "REQUESTS_CA_BUNDLE": "certs/ca.pem"}}))
    bootstrap.use(None)
    try:
        code, _, err = run(None, "--settings", str(path), "accounts", "list", "--size", "0")
        assert bootstrap.settings().client_id == TEST_ENV["MICROSOFT_CLIENT_ID"]
    finally:
        bootstrap.use(None)
    assert code == 1 and "page size" in err
    import os

    assert os.environ["REQUESTS_CA_BUNDLE"] == str((tmp_path / "certs" / "ca.pem").resolve())
