"""What a product and its user do with connect sessions, against a running local stack."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urljoin, urlparse

import requests

from devstack.stack import LocalStack
from shared.browser_binding import BINDING_COOKIE
from tests.support.stack import browser, function_key_headers, read_form, read_queue


def create_session(stack: LocalStack, body: Any) -> requests.Response:
    """The product's backend: POST /api/connect-sessions with the function key."""
    return requests.post(
        f"{stack.devhost_url}/api/connect-sessions", json=body, headers=function_key_headers(stack), timeout=30
    )


def get_session(stack: LocalStack, session_id: str) -> requests.Response:
    return requests.get(
        f"{stack.devhost_url}/api/connect-sessions/{session_id}", headers=function_key_headers(stack), timeout=30
    )


@dataclass
class SignIn:
    """One browser's way through a connect: what it saw, what it sent back."""

    browser: requests.Session
    callback_url: str = ""
    callback_fields: dict[str, str] = field(default_factory=dict)
    start: requests.Response | None = None
    finish: requests.Response | None = None

    @property
    def cookie(self) -> str | None:
        return self.browser.cookies.get(BINDING_COOKIE)

    def outcome(self) -> dict[str, str]:
        """The query the browser was sent back to the product with (a 302 to returnUrl)."""
        assert self.finish is not None and self.finish.status_code == 302, self.finish and self.finish.text
        query = parse_qs(urlparse(self.finish.headers["Location"]).query)
        return {k: v[0] for k, v in query.items()}


def sign_in_at(stack: LocalStack, url: str, *, post: bool = True, session: requests.Session | None = None) -> SignIn:
    """Open ``url`` (a connectUrl, or /api/connect) in a browser, let the simulator consent
    (auto-consent) and, with ``post``, send its form_post answer to the callback without
    following the redirect that ends it."""
    run = SignIn(session or browser(stack))
    run.start = run.browser.get(url, timeout=30)
    form = read_form(run.start.text) if "text/html" in run.start.headers.get("Content-Type", "") else None
    if form is None or not form.action or form.method != "POST":
        return run
    run.callback_url = urljoin(run.start.url, form.action)
    run.callback_fields = dict(form.fields)
    if post:
        run.finish = run.browser.post(run.callback_url, data=run.callback_fields, timeout=30, allow_redirects=False)
    return run


# Every account event read so far, by stack: reading deletes them from the queue, and
# another test's events must not be lost to it.
_read_events: dict[int, list[dict[str, Any]]] = {}


def account_events(stack: LocalStack, account_id: str) -> list[dict[str, Any]]:
    """The events of ``account_id`` on ``account-events`` so far, in the order published."""
    seen = _read_events.setdefault(id(stack), [])
    while True:
        batch = read_queue(stack, "account-events")
        if not batch:
            break
        seen.extend(batch)
    return [e for e in seen if isinstance(e, dict) and e.get("data", {}).get("accountId") == account_id]
