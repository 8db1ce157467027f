"""``make demo``: connect a simulated mailbox and watch its CloudEvents arrive.

With ``make run`` up, this creates a user in the Graph simulator and connects it as a
product would: its backend creates a connect session for its user ``demo-owner-…``
(POST /api/connect-sessions with the function key), the "browser" opens the session's
connectUrl (which sets the browser-binding cookie and goes on to the simulator's sign-in
with auto-consent) and its form_post page posts back to our callback. It prints the
session's outcome and the ``account-events`` CloudEvent, sends a few mails through the
simulator's control API, and prints each CloudEvent read from the ``mail-events`` queue
with the time from the mail's creation to its event. The connect and event-reading parts
are reused by bench/bench_latency.py.

    python -m devstack.demo [--mails 5] [--interval 1.0]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from http.cookiejar import Cookie, DefaultCookiePolicy
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlparse

import requests

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MAIL_EVENT_QUEUE = "mail-events"
ACCOUNT_EVENT_QUEUE = "account-events"


class _Form(HTMLParser):
    """The first form of a page, as a browser would submit it."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.method = "GET"
        self.fields: dict[str, str] = {}
        self._inside = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form" and self.action is None:
            self.action, self.method, self._inside = (
                values.get("action", ""),
                values.get("method", "GET").upper(),
                True,
            )
        elif tag == "input" and self._inside and values.get("name") and values.get("type") != "submit":
            self.fields[values["name"]] = values.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._inside = False


@dataclass
class Endpoints:
    devhost: str
    graphsim: str
    ca_file: str
    storage: str

    function_key: str = ""

    def session(self) -> requests.Session:
        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE in the environment would replace our CA
        session.verify = self.ca_file
        session.cookies.set_policy(_LoopbackIsSecure())
        return session


class _LoopbackIsSecure(DefaultCookiePolicy):
    """As browsers do, keep the ``Secure`` cookie of a plain-http loopback host (the
    connector's browser-binding cookie) and send it back there."""

    def set_ok(self, cookie: Cookie, request: Any) -> bool:
        if urlparse(request.get_full_url()).hostname in ("127.0.0.1", "localhost"):
            cookie.secure = False
        return bool(super().set_ok(cookie, request))


def create_user(endpoints: Endpoints, session: requests.Session, prefix: str = "demo") -> dict[str, Any]:
    upn = f"{prefix}-{uuid.uuid4().hex[:6]}@contoso.test"
    response = session.post(f"{endpoints.graphsim}/_sim/users", json={"userPrincipalName": upn}, timeout=15)
    response.raise_for_status()
    return dict(response.json())


def connect(endpoints: Endpoints, session: requests.Session, login_hint: str) -> requests.Response:
    """The browser's part of the connect flow: follow redirects, submit the form_post page."""
    response = session.get(f"{endpoints.devhost}/api/connect", params={"login_hint": login_hint}, timeout=30)
    for _ in range(5):
        form = _Form()
        form.feed(response.text)
        if form.method != "POST" or not form.action or not ({"code", "error"} & set(form.fields)):
            break
        response = session.post(urljoin(response.url, form.action), data=form.fields, timeout=30)
    return response


def connect_with_session(
    endpoints: Endpoints, session: requests.Session, login_hint: str, owner_id: str
) -> tuple[dict[str, Any], requests.Response]:
    """The product's backend creates a connect session for its user; the browser opens its
    connectUrl and signs in. Returns the session as the backend then reads it, and the
    browser's last page."""
    headers = {"x-functions-key": endpoints.function_key}
    created = session.post(
        f"{endpoints.devhost}/api/connect-sessions",
        json={"ownerId": owner_id, "loginHint": login_hint},
        headers=headers,
        timeout=15,
    )
    created.raise_for_status()
    response = session.get(created.json()["connectUrl"], timeout=30)
    for _ in range(5):
        form = _Form()
        form.feed(response.text)
        if form.method != "POST" or not form.action or not ({"code", "error"} & set(form.fields)):
            break
        response = session.post(urljoin(response.url, form.action), data=form.fields, timeout=30)
    shown = session.get(
        f"{endpoints.devhost}/api/connect-sessions/{created.json()['sessionId']}", headers=headers, timeout=15
    )
    shown.raise_for_status()
    return dict(shown.json()), response


def wait_for_subscription(
    endpoints: Endpoints, session: requests.Session, user_id: str, timeout: float = 30
) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live = session.get(f"{endpoints.graphsim}/_sim/subscriptions", timeout=15).json()["value"]
        mine = [s["id"] for s in live if s.get("userId") == user_id]
        if mine:
            return str(mine[0])
        time.sleep(0.2)
    raise RuntimeError(f"no subscription for user {user_id} after {timeout:.0f}s")


def send_mail(endpoints: Endpoints, session: requests.Session, user_id: str, subject: str) -> str:
    body = {"subject": subject, "from": "sender@fabrikam.test", "body": f"This is {subject}."}
    response = session.post(f"{endpoints.graphsim}/_sim/users/{user_id}/messages", json=body, timeout=15)
    response.raise_for_status()
    return str(response.json()["id"])


class MailEventReader:
    """A consumer of ``mail-events`` (or another event queue): receives, decodes (base64
    JSON) and deletes."""

    def __init__(self, storage_connection: str, queue: str = MAIL_EVENT_QUEUE) -> None:
        from azure.storage.queue import QueueClient

        self._client = QueueClient.from_connection_string(storage_connection, queue)
        try:
            self._client.create_queue()
        except Exception:  # noqa: BLE001,S110 - it exists already
            pass

    def poll(self) -> Iterator[dict[str, Any]]:
        for message in self._client.receive_messages(messages_per_page=32, visibility_timeout=30):
            self._client.delete_message(message)
            try:
                event = json.loads(base64.b64decode(message.content))
            except ValueError:
                continue
            if isinstance(event, dict):
                yield event

    def drain(self) -> int:
        return sum(1 for _ in self.poll())


def _local_endpoints() -> Endpoints:
    from devstack.stack import DEFAULT_PORTS, load_local_settings

    path = PROJECT_ROOT / "local.settings.json"
    if not path.exists():
        path = PROJECT_ROOT / "local.settings.json.example"
    settings = load_local_settings(path)
    from devstack.devhost import DEFAULT_FUNCTION_KEY

    return Endpoints(
        function_key=os.environ.get("DEVHOST_FUNCTION_KEY") or DEFAULT_FUNCTION_KEY,
        devhost=f"http://127.0.0.1:{DEFAULT_PORTS['DEVHOST_PORT']}",
        graphsim=f"https://127.0.0.1:{DEFAULT_PORTS['GRAPHSIM_PORT']}",
        ca_file=str(PROJECT_ROOT / ".devstack" / "certs" / "ca.pem"),
        storage=settings["AzureWebJobsStorage"],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Connect a simulated mailbox and watch its CloudEvents.")
    parser.add_argument("--mails", type=int, default=5)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between mails")
    parser.add_argument("--devhost", help="the devhost's URL (default: make run's)")
    parser.add_argument("--graphsim", help="the simulator's URL")
    parser.add_argument("--ca-file", help="the local CA certificate")
    parser.add_argument("--storage", help="the storage connection string")
    parser.add_argument("--function-key", help="the devhost's function key (default: DEVHOST_FUNCTION_KEY or its default)")
    args = parser.parse_args(argv)
    endpoints = _local_endpoints()
    endpoints.devhost = args.devhost or endpoints.devhost
    endpoints.graphsim = args.graphsim or endpoints.graphsim
    endpoints.ca_file = args.ca_file or endpoints.ca_file
    endpoints.storage = args.storage or endpoints.storage
    endpoints.function_key = args.function_key or endpoints.function_key
    session = endpoints.session()
    try:
        session.get(f"{endpoints.devhost}/api/health", timeout=5)
    except requests.ConnectionError:
        print(
            f"nothing answers at {endpoints.devhost}: start the stack with `make run` first", file=sys.stderr
        )
        return 2

    user = create_user(endpoints, session)
    print(f"simulator user {user['userPrincipalName']} created")
    owner_id = f"demo-owner-{uuid.uuid4().hex[:6]}"
    lifecycle = MailEventReader(endpoints.storage, ACCOUNT_EVENT_QUEUE)
    lifecycle.drain()
    connect_session, page = connect_with_session(endpoints, session, user["userPrincipalName"], owner_id)
    if page.status_code != 200 or connect_session["status"] != "completed":
        print(f"connect failed: {page.status_code} {connect_session} {page.text[:300]}", file=sys.stderr)
        return 1
    subscription = wait_for_subscription(endpoints, session, user["id"])
    print(
        f"connect session for {owner_id}: {connect_session['status']}, account {connect_session['accountId']}; "
        f"Graph subscription {subscription}"
    )
    for event in lifecycle.poll():
        print(f"<- {event['type']}  owner {event['data'].get('ownerId')}")

    reader = MailEventReader(endpoints.storage)
    reader.drain()
    sent: dict[str, float] = {}
    latencies: list[float] = []
    deadline = time.monotonic() + args.mails * args.interval + 20
    next_mail = time.monotonic()
    while time.monotonic() < deadline and (len(sent) < args.mails or len(latencies) < len(sent)):
        if len(sent) < args.mails and time.monotonic() >= next_mail:
            started = time.monotonic()
            message_id = send_mail(endpoints, session, user["id"], f"Demo mail {len(sent) + 1}")
            sent[message_id] = started
            print(f"-> sent 'Demo mail {len(sent)}'")
            next_mail += args.interval
        for event in reader.poll():
            if event.get("data", {}).get("accountId", "").split(".")[0] != user["id"]:
                continue
            created = sent.get(str(event.get("subject")))
            latency = (time.monotonic() - created) * 1000 if created is not None else float("nan")
            if created is not None and event["type"].endswith(".created"):
                latencies.append(latency)
            print(
                f"<- {event['type']}  '{event['data'].get('subject')}'  {latency:.0f} ms after the mail was created"
            )
            print("   " + json.dumps(event, indent=None)[:400])
        time.sleep(0.02)
    if latencies:
        ordered = sorted(latencies)
        print(
            f"{len(latencies)}/{len(sent)} mails announced; latency median {ordered[len(ordered) // 2]:.0f} ms, "
            f"max {ordered[-1]:.0f} ms (5-minute polling: 150,000 ms on average)"
        )
    return 0 if len(latencies) == len(sent) else 1


if __name__ == "__main__":
    raise SystemExit(main())
