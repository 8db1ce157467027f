"""A person connects their mailbox in a real (headless) browser: the start page, the
simulator's consent page, Microsoft's form_post back to our callback, the success page."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from selenium import webdriver

from devstack.stack import LocalStack
from tests.support.sessions import create_session, get_session
from tests.support.stack import function_key_headers, new_user

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[Any]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.fail("chromium and chromium-driver are not installed (make browser-deps installs them)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        # The simulator serves HTTPS from the devstack's own local CA, which this fresh
        # browser profile does not trust; everything it talks to is on 127.0.0.1.
        "--ignore-certificate-errors",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def consent_page_shown(stack: LocalStack) -> Iterator[None]:
    before = stack.sim("GET", "/_sim/settings")["autoConsent"]
    stack.sim("PUT", "/_sim/settings", json={"autoConsent": False})
    yield
    stack.sim("PUT", "/_sim/settings", json={"autoConsent": before})


def test_a_person_connects_their_mailbox_in_a_browser(
    stack: LocalStack, chromium: Any, consent_page_shown: None
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    user = new_user(stack, "browser")
    wait = WebDriverWait(chromium, 30)

    chromium.get(f"{stack.devhost_url}/api/connect/start")
    chromium.find_element(By.ID, "login_hint").send_keys(user["userPrincipalName"])
    chromium.find_element(By.ID, "connect").click()

    # The simulator's sign-in and consent page, with the hinted account selected.
    wait.until(ec.presence_of_element_located((By.ID, "accept")))
    assert chromium.current_url.startswith(stack.graphsim_url)
    chromium.find_element(By.ID, "accept").click()

    # Its form_post page submits itself to our callback, which shows the result.
    result = wait.until(ec.presence_of_element_located((By.ID, "result")))
    assert result.text == "Account connected"
    assert chromium.current_url == f"{stack.devhost_url}/api/auth/callback"
    assert user["userPrincipalName"] in chromium.page_source

    shown = requests.get(
        f"{stack.devhost_url}/api/accounts/{user['id']}.{user['tenantId']}",
        headers=function_key_headers(stack),
        timeout=30,
    )
    assert shown.status_code == 200
    assert shown.json()["status"] == "active"
    assert shown.json()["subscriptions"]


def test_a_real_browser_connects_through_a_connect_url_and_lands_on_the_return_url(
    stack: LocalStack, chromium: Any
) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    user = new_user(stack, "chromium")
    owner_id = f"product-user:{user['id'][:8]}"
    created = create_session(
        stack,
        {"ownerId": owner_id, "loginHint": user["userPrincipalName"],
         "returnUrl": f"{stack.devhost_url}/api/health?from=connect"},
    ).json()

    chromium.get(created["connectUrl"])
    WebDriverWait(chromium, 30).until(lambda d: "status=" in d.current_url)

    # The browser kept the HttpOnly, Secure, SameSite=None cookie across Microsoft's
    # cross-site form_post, and ended on the product's returnUrl.
    landed = urlparse(chromium.current_url)
    assert f"{landed.scheme}://{landed.netloc}{landed.path}" == f"{stack.devhost_url}/api/health"
    query = parse_qs(landed.query)
    assert query["accountId"] == [f"{user['id']}.{user['tenantId']}"]
    assert query["status"] == ["connected"] and query["sessionId"] == [created["sessionId"]]
    shown = get_session(stack, created["sessionId"]).json()
    assert shown["status"] == "completed" and shown["accountId"] == query["accountId"][0]
    owned = requests.get(
        f"{stack.devhost_url}/api/accounts", params={"ownerId": owner_id},
        headers=function_key_headers(stack), timeout=30,
    ).json()["accounts"]
    assert [a["id"] for a in owned] == query["accountId"]
