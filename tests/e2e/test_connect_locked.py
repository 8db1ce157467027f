"""A locked-down deployment, as infra/ configures it, through a local stack of its own:
no anonymous connect, a tenant allow-list, and time moved forward in the devhost to see
sessions expire and the purge timer empty the tables.

The devhost of this stack runs under libfaketime (Debian's ``faketime``; ``make test``
installs it): its clock reads the offset written to a file, so "an hour later" takes no
hour. Azurite, the simulator and this test keep the real time.
"""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlparse

import pytest
import requests

from devstack.stack import LocalStack
from shared.adapters.keyvault import KeyVaultSecretStore
from shared.tokens import token_cache_secret_name
from tests.conftest import STACK_SETTINGS
from tests.support.faketime import Clock, faketime_env
from tests.support.sessions import create_session, get_session, sign_in_at
from tests.support.stack import browser, function_key_headers, new_user, wait_for

pytestmark = pytest.mark.e2e

ALLOWED_TENANT = "7e1c0a55-0000-4000-8000-00000000a11d"  # not the simulator's tenant
PRODUCT = "https://product.test"


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStack, Clock]]:
    data_dir = tmp_path_factory.mktemp("locked")
    clock_file = data_dir / "faketime"
    settings = {
        **STACK_SETTINGS,
        "ALLOW_ANONYMOUS_CONNECT": "false",
        "ALLOWED_TENANT_IDS": ALLOWED_TENANT,
        "ALLOWED_RETURN_ORIGINS": PRODUCT,
        "CONNECT_SESSION_MINUTES": "15",
        # The devhost process only: its clock follows the file; monotonic clocks (timeouts,
        # the HTTP server's waits) stay real.
        **faketime_env(clock_file),
    }
    with LocalStack.on_free_ports(data_dir, extra_settings=settings) as running:
        clock = Clock(clock_file, running)
        yield running, clock


@pytest.fixture
def stack(locked: tuple[LocalStack, Clock]) -> Iterator[LocalStack]:
    yield locked[0]
    locked[1].set(0)


@pytest.fixture
def clock(locked: tuple[LocalStack, Clock]) -> Clock:
    return locked[1]


def rows(stack: LocalStack, table: str) -> int:
    from azure.data.tables import TableServiceClient

    service = TableServiceClient.from_connection_string(stack.storage_connection)
    service.create_table_if_not_exists(table)
    return sum(1 for _ in service.get_table_client(table).list_entities(select=["RowKey"]))


def fire(stack: LocalStack, function: str) -> None:
    response = requests.post(
        f"{stack.devhost_url}/admin/functions/{function}", headers={"x-functions-key": stack.function_key},
        json={}, timeout=30,
    )
    assert response.status_code == 202, response.text


def test_the_devhost_clock_moves(stack: LocalStack, clock: Clock) -> None:
    created = create_session(stack, {"ownerId": "clock-check"}).json()
    clock.set(3600)
    later = create_session(stack, {"ownerId": "clock-check"}).json()
    first = dt.datetime.fromisoformat(created["expiresAt"].replace("Z", "+00:00"))
    second = dt.datetime.fromisoformat(later["expiresAt"].replace("Z", "+00:00"))
    assert dt.timedelta(minutes=59) < second - first < dt.timedelta(minutes=62)


def test_anonymous_connect_is_refused(stack: LocalStack) -> None:
    for path in ("/api/connect", "/api/connect?login_hint=a@contoso.test", "/api/connect/start"):
        response = requests.get(f"{stack.devhost_url}{path}", allow_redirects=False, timeout=30)
        assert response.status_code == 403, path
        assert "connect link" in response.text
        assert "Set-Cookie" not in response.headers
    assert rows(stack, "authflows") == 0


def test_a_user_of_another_tenant_is_refused_after_sign_in_and_nothing_is_stored(stack: LocalStack) -> None:
    user = new_user(stack, "outsider")
    created = create_session(
        stack, {"ownerId": "o-1", "loginHint": user["userPrincipalName"], "returnUrl": f"{PRODUCT}/back"}
    ).json()
    run = sign_in_at(stack, created["connectUrl"])

    assert run.finish is not None and run.finish.status_code == 302
    assert run.outcome()["status"] == "failed" and run.outcome()["error"] == "tenant_not_allowed"
    shown = get_session(stack, created["sessionId"]).json()
    assert shown["status"] == "failed" and shown["error"] == "tenant_not_allowed"
    the_account = f"{user['id']}.{user['tenantId']}"
    assert requests.get(
        f"{stack.devhost_url}/api/accounts/{the_account}", headers=function_key_headers(stack), timeout=30
    ).status_code == 404
    assert KeyVaultSecretStore(stack.keyvault_url, ca_bundle=str(stack.ca_file)).get(
        token_cache_secret_name(the_account)
    ) is None
    assert [s for s in stack.sim("GET", "/_sim/subscriptions")["value"] if s["userId"] == user["id"]] == []


def test_an_expired_session_is_refused_and_reads_expired(stack: LocalStack, clock: Clock) -> None:
    with_return = create_session(stack, {"ownerId": "late", "returnUrl": f"{PRODUCT}/back"}).json()
    without = create_session(stack, {"ownerId": "late"}).json()
    clock.set(16 * 60)

    sent_back = browser(stack).get(with_return["connectUrl"], allow_redirects=False, timeout=30)
    page = browser(stack).get(without["connectUrl"], allow_redirects=False, timeout=30)

    assert sent_back.status_code == 302
    query = parse_qs(urlparse(sent_back.headers["Location"]).query)
    assert query["status"] == ["failed"] and query["error"] == ["session_expired"]
    assert page.status_code == 400 and "expired" in page.text
    for created in (with_return, without):
        assert get_session(stack, created["sessionId"]).json()["status"] == "expired"


def test_a_session_opened_but_never_finished_expires_with_its_sign_in(stack: LocalStack, clock: Clock) -> None:
    created = create_session(stack, {"ownerId": "abandons"}).json()
    opened = browser(stack).get(created["connectUrl"], allow_redirects=False, timeout=30)
    assert opened.status_code == 302
    assert get_session(stack, created["sessionId"]).json()["status"] == "pending"
    clock.set(11 * 60)
    assert get_session(stack, created["sessionId"]).json()["status"] == "expired"


def test_abandoned_connects_leave_no_rows_an_hour_later(stack: LocalStack, clock: Clock) -> None:
    count = int(os.environ.get("ABANDONED_CONNECTS", "200"))

    def abandon(n: int) -> int:
        created = create_session(stack, {"ownerId": f"abandoned-{n}"}).json()
        # The browser goes to Microsoft and never comes back.
        return browser(stack).get(created["connectUrl"], allow_redirects=False, timeout=30).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(abandon, range(count))) == {302}
    assert rows(stack, "authflows") >= count
    assert rows(stack, "connectsessions") >= count

    fire(stack, "purge_expired_connects")  # nothing has expired yet: nothing goes
    time.sleep(1.0)
    assert rows(stack, "authflows") >= count

    # Past every row of the module: the sessions a test made an hour ahead are purged an
    # hour and a quarter after that.
    clock.set(4 * 3600)
    fire(stack, "purge_expired_connects")

    wait_for(lambda: rows(stack, "authflows") == 0 and rows(stack, "connectsessions") == 0,
             timeout=120, interval=1.0, what="the purge to empty authflows and connectsessions")


def test_a_live_session_survives_the_purge(stack: LocalStack, clock: Clock) -> None:
    created = create_session(stack, {"ownerId": f"live-{uuid.uuid4().hex[:6]}"}).json()
    fire(stack, "purge_expired_connects")
    time.sleep(1.5)
    assert get_session(stack, created["sessionId"]).json()["status"] == "pending"

