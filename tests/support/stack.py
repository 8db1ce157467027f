"""The whole local stack for end-to-end tests, and what a user does with it.

The session fixture ``stack`` (tests/conftest.py) starts Azurite, the Key Vault emulator,
the Graph simulator and the devhost running ``function_app`` on free ports. The helpers
here act as a person would: open the connect URL in a "browser" that follows redirects
and submits the simulator's auto-posting form, send mail through the simulator, read
CloudEvents from the ``mail-events`` queue.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from html.parser import HTMLParser
from http.cookiejar import Cookie, DefaultCookiePolicy
from typing import Any, TypeVar
from urllib.parse import urljoin, urlparse

import requests

from devstack.stack import LocalStack

T = TypeVar("T")


class _FormReader(HTMLParser):
    """Reads the first <form>: its action, method and named inputs (as a browser would post)."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.method = "GET"
        self.fields: dict[str, str] = {}
        self._in_form = False
        self._done = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and not self._done and self.action is None:
            self.action, self.method, self._in_form = a.get("action", ""), a.get("method", "GET").upper(), True
        elif tag == "input" and self._in_form and a.get("name") and a.get("type", "text") != "submit":
            self.fields[a["name"]] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form" and self._in_form:
            self._in_form, self._done = False, True


def read_form(html: str) -> _FormReader:
    reader = _FormReader()
    reader.feed(html)
    return reader


class _LoopbackIsSecure(DefaultCookiePolicy):
    """Browsers treat plain-http 127.0.0.1 and localhost as secure contexts and send their
    ``Secure`` cookies there (the connector's browser-binding cookie is one); the standard
    library sends them over https only. A ``Secure`` cookie a loopback host sets is kept
    without the flag here (requests copies the jar per request, without its policy)."""

    def set_ok(self, cookie: Cookie, request: Any) -> bool:
        if urlparse(request.get_full_url()).hostname in ("127.0.0.1", "localhost"):
            cookie.secure = False
        return bool(super().set_ok(cookie, request))


def browser(stack: LocalStack) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # the machine may set REQUESTS_CA_BUNDLE, which would override verify
    session.verify = str(stack.ca_file)
    session.cookies.set_policy(_LoopbackIsSecure())
    return session


def connect_user(stack: LocalStack, login_hint: str, *, session: requests.Session | None = None) -> requests.Response:
    """Connect a simulator user through the real flow (auto-consent): /api/connect, the
    simulator's authorize endpoint, its auto-submitting form_post page, our callback.
    Returns the final response (the success page, or an error page)."""
    s = session or browser(stack)
    response = s.get(f"{stack.devhost_url}/api/connect", params={"login_hint": login_hint}, timeout=30)
    for _ in range(5):
        form = read_form(response.text) if "text/html" in response.headers.get("Content-Type", "") else None
        if form is None or not form.action or form.method != "POST" or "code" not in form.fields and "error" not in form.fields:
            return response
        response = s.post(urljoin(response.url, form.action), data=form.fields, timeout=30)
    return response


def new_user(stack: LocalStack, prefix: str = "user") -> dict[str, Any]:
    upn = f"{prefix}-{uuid.uuid4().hex[:8]}@contoso.test"
    return dict(stack.sim("POST", "/_sim/users", json={"userPrincipalName": upn, "displayName": prefix.title()}))


def send_mail(stack: LocalStack, user: str, subject: str, **extra: Any) -> dict[str, Any]:
    body = {"subject": subject, "from": "sender@fabrikam.test", "body": f"body of {subject}", **extra}
    return dict(stack.sim("POST", f"/_sim/users/{user}/messages", json=body))


def function_key_headers(stack: LocalStack) -> dict[str, str]:
    return {"x-functions-key": stack.function_key}


def run_timer(stack: LocalStack, function: str) -> None:
    """Fire a timer function now, through the devhost's admin API (as ``func`` does)."""
    response = requests.post(
        f"{stack.devhost_url}/admin/functions/{function}", headers=function_key_headers(stack), json={}, timeout=30
    )
    assert response.status_code == 202, response.text


def read_queue(stack: LocalStack, queue: str, *, max_messages: int = 32) -> list[Any]:
    """Receive and delete what is on ``queue`` now, decoded from base64 JSON."""
    from azure.storage.queue import QueueClient

    client = QueueClient.from_connection_string(stack.storage_connection, queue)
    try:
        client.create_queue()
    except Exception:  # noqa: BLE001,S110 - it exists already
        pass
    out: list[Any] = []
    for message in client.receive_messages(messages_per_page=max_messages, visibility_timeout=30):
        text = base64.b64decode(message.content).decode("utf-8")
        try:
            out.append(json.loads(text))
        except ValueError:
            out.append(text)
        client.delete_message(message)
    return out


def wait_for(check: Callable[[], T | None], *, timeout: float = 20.0, interval: float = 0.1,
             what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
