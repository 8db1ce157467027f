"""The operators' accounts API through the registered handlers, over fakes of every port."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import azure.functions as func
import pytest

from shared import bootstrap
from shared.bootstrap import Services
from shared.connect import complete_connect, start_connect
from shared.models import AccountStatus
from shared.tokens import token_cache_secret_name
from tests.fakes import FakeUser, make_services
from tests.support.app import app_functions, handler, http_request

# The browser-binding cookie's value a test browser carries.
BROWSER = "b" * 43

BASE = "https://connector.example.test"


@pytest.fixture
def services() -> Iterator[Services]:
    installed = make_services()
    bootstrap.use(installed)
    yield installed
    bootstrap.use(None)


def connect(services: Services, user: FakeUser) -> str:
    services.identity.next_user = user
    services.graph.users[user.account_id] = {"id": user.object_id, "userPrincipalName": user.username}
    start_connect(services, browser_binding=BROWSER)
    state = services.identity.started[-1]["state"]
    return complete_connect(services, {"state": state, "code": f"code-for-{state}"}, browser_binding=BROWSER).account.account_id


def body(response: func.HttpResponse) -> Any:
    assert response.mimetype == "application/json"
    return json.loads(response.get_body())


def item(method: str, account_id: str) -> func.HttpResponse:
    request = http_request(
        method, f"{BASE}/api/accounts/{account_id}", route_params={"account_id": account_id}
    )
    return handler("accounts_item")(request)


def listing(**params: str) -> func.HttpResponse:
    return handler("accounts_list")(http_request("GET", f"{BASE}/api/accounts", params=params))


def test_the_accounts_routes_need_a_function_key() -> None:
    functions = app_functions()
    assert functions["accounts_list"].get_trigger().route == "accounts"
    assert functions["accounts_item"].get_trigger().route == "accounts/{account_id}"
    for name in ("accounts_list", "accounts_item"):
        assert str(functions[name].get_trigger().auth_level).endswith("FUNCTION")


def test_the_list_shows_what_operators_need_and_pages(services: Services) -> None:
    for n in range(3):
        connect(services, FakeUser(f"oid-{n}", "tenant-1", f"user{n}@contoso.test"))

    first = body(listing(size="2"))
    second = body(listing(size="2", continuation=first["continuation"]))

    assert len(first["accounts"]) == 2 and first["continuation"]
    assert len(second["accounts"]) == 1 and second["continuation"] is None
    entry = first["accounts"][0]
    assert entry["id"] == "oid-0.tenant-1"
    assert entry["user"] == "user0@contoso.test"
    assert entry["tenant"] == "tenant-1"
    assert entry["status"] == "active"
    assert entry["subscriptionExpiresAt"].endswith("Z")
    assert set(entry) >= {"lastNotificationAt", "lastError"}


@pytest.mark.parametrize("size", ["0", "1000", "many"])
def test_a_bad_page_size_is_a_400(services: Services, size: str) -> None:
    assert listing(size=size).status_code == 400


def test_show_one_account(services: Services) -> None:
    account_id = connect(services, FakeUser("oid-a", "tenant-1", "a@contoso.test"))
    response = item("GET", account_id)
    assert response.status_code == 200
    assert body(response)["user"] == "a@contoso.test"


def test_an_unknown_account_is_a_404(services: Services) -> None:
    assert item("GET", "nobody.nowhere").status_code == 404
    assert item("DELETE", "nobody.nowhere").status_code == 404


def test_delete_disconnects_and_is_idempotent(services: Services) -> None:
    account_id = connect(services, FakeUser("oid-a", "tenant-1", "a@contoso.test"))

    first = item("DELETE", account_id)
    second = item("DELETE", account_id)

    assert first.status_code == second.status_code == 200
    assert body(second)["status"] == "disconnected"
    assert services.graph.for_account(account_id) == []
    assert services.secrets.get(token_cache_secret_name(account_id)) is None
    stored = services.accounts.get(account_id)
    assert stored is not None and stored.status == AccountStatus.DISCONNECTED


def resync(account_id: str) -> func.HttpResponse:
    request = http_request(
        "POST", f"{BASE}/api/accounts/{account_id}/resync", route_params={"account_id": account_id}
    )
    return handler("accounts_resync")(request)


def test_resync_runs_a_delta_round_and_says_what_it_published(services: Services) -> None:
    account_id = connect(services, FakeUser("oid-a", "tenant-1", "a@contoso.test"))
    response = resync(account_id)
    assert response.status_code == 200
    assert body(response)["skipped"] is None
    assert str(app_functions()["accounts_resync"].get_trigger().auth_level).endswith("FUNCTION")


def test_resync_of_an_unknown_account_is_a_404(services: Services) -> None:
    assert resync("nobody.nowhere").status_code == 404


def test_resync_with_a_revoked_refresh_token_marks_the_account_reauth_required(services: Services) -> None:
    account_id = connect(services, FakeUser("oid-a", "tenant-1", "a@contoso.test"))
    services.tokens.forget(account_id)  # type: ignore[attr-defined]
    services.identity.revoke(account_id)

    response = resync(account_id)

    assert body(response)["skipped"] == "reauth_required"
    stored = services.accounts.get(account_id)
    assert stored is not None and stored.status == AccountStatus.REAUTH_REQUIRED
    assert item("GET", account_id).status_code == 200  # still visible to operators


def test_a_failing_dependency_is_a_plain_reason_with_the_status_every_route_gives(services: Services) -> None:
    from shared.errors import PersistenceError, UpstreamError

    def unreadable(**kwargs: Any) -> Any:
        raise PersistenceError("table down")

    services.accounts.page = unreadable  # type: ignore[method-assign]
    storage = listing()
    assert storage.status_code == 503
    assert body(storage) == {"error": "accounts could not be read"}  # the route's own shape

    account_id = connect(services, FakeUser("oid-up", "tenant-1", "up@contoso.test"))

    def graph_down(account_id: str) -> Any:
        raise UpstreamError("Graph unreachable")

    services.subscriptions.for_account = graph_down  # type: ignore[method-assign]
    upstream = item("GET", account_id)
    assert upstream.status_code == 502  # as on the mail routes: the dependency failed
    assert body(upstream) == {"error": "the account could not be handled right now; try again"}
