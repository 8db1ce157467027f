"""Fixtures for tests that talk to the identity + Graph simulator.

- ``graphsim``: one :class:`GraphSimulator` for the session, on a free port, with its
  certificates in a temporary directory; ``graphsim.base_url``, ``graphsim.graph_url``,
  ``graphsim.ca_file``.
- ``sim``: a ``requests.Session`` on the control API (``sim.post("/users", ...)``), which
  also restores default settings and clears faults after each test.
- ``sim_user``: a fresh mailbox user for this test (dict with ``id``, ``userPrincipalName``).
- ``webhook``: a local plain-HTTP notification receiver (loopback http is allowed).
- ``confidential_app``: an MSAL ``ConfidentialClientApplication`` for the default app.
- ``sign_in(app, upn, scopes)``: the auth-code + PKCE flow through the simulator, as a
  browser would follow it (auto-consent for a known ``login_hint``); returns MSAL's result.
- ``user_token``: a delegated Graph access token (User.Read Mail.ReadWrite) for ``sim_user``.
- ``graph_sdk``: Microsoft's own Graph SDK (``msgraph-sdk``) on the simulator with that token:
  ``graph_sdk.client`` (a ``GraphServiceClient``), ``graph_sdk.run(coroutine)`` (the SDK is
  async: one event loop per test). Its httpx client has the simulator's ``/v1.0`` as base
  URL and trusts the simulator's CA; its default middleware (retries, redirects, telemetry)
  is kept.

MSAL and ``requests.Session`` take ``REQUESTS_CA_BUNDLE`` over a session's ``verify``, so
every test here runs with ``REQUESTS_CA_BUNDLE`` pointing at the simulator's CA.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import msal
import pytest
import requests
from kiota_abstractions.authentication import AccessTokenProvider, AllowedHostsValidator
from kiota_abstractions.authentication.base_bearer_token_authentication_provider import (
    BaseBearerTokenAuthenticationProvider,
)
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.graph_request_adapter import options as graph_middleware_options
from msgraph_core import GraphClientFactory

from devstack.graphsim import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_REDIRECT_URI, GraphSimulator
from devstack.graphsim.state import Settings


@pytest.fixture(scope="session")
def graphsim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GraphSimulator]:
    with GraphSimulator(host="127.0.0.1", port=0, cert_dir=tmp_path_factory.mktemp("graphsim-certs")) as simulator:
        yield simulator


class ControlSession(requests.Session):
    """``requests.Session`` whose relative URLs go to ``{base_url}/_sim``."""

    def __init__(self, simulator: GraphSimulator) -> None:
        super().__init__()
        self.simulator = simulator
        self.verify = simulator.ca_file

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if isinstance(url, str) and url.startswith("/"):
            url = self.simulator.control_url + url
        return super().request(method, url, *args, **kwargs)


@pytest.fixture
def sim(graphsim: GraphSimulator) -> Iterator[ControlSession]:
    session = ControlSession(graphsim)
    yield session
    session.put("/settings", json=Settings().public()).raise_for_status()
    session.delete("/faults").raise_for_status()
    session.close()


@pytest.fixture
def sim_user(sim: ControlSession) -> dict[str, Any]:
    upn = f"user-{uuid.uuid4().hex[:10]}@contoso.test"
    response = sim.post("/users", json={"userPrincipalName": upn, "displayName": "Test User"})
    response.raise_for_status()
    return response.json()


class WebhookReceiver:
    """A notification endpoint: answers the validation handshake and records notifications.

    ``validation``: "echo" (correct), "wrong" (answers another body), "status" (answers 400),
    "slow" (sleeps ``delay`` before echoing). ``status`` and ``delay`` apply to notifications.
    """

    def __init__(self) -> None:
        self.validation = "echo"
        self.status = 202
        self.delay = 0.0
        self.fail_first = 0
        self.validations: list[str] = []
        self.posts: list[dict[str, Any]] = []  # {"path", "body", "at"}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                query = parse_qs(urlsplit(self.path).query)
                if "validationToken" in query:
                    token = query["validationToken"][0]
                    with receiver._lock:
                        receiver.validations.append(token)
                    mode = receiver.validation
                    if mode == "slow":
                        time.sleep(receiver.delay)
                    if mode == "status":
                        self._answer(400, b"no", "text/plain")
                    elif mode == "wrong":
                        self._answer(200, b"not-the-token", "text/plain")
                    else:
                        self._answer(200, token.encode(), "text/plain")
                    return
                with receiver._lock:
                    receiver.posts.append({"path": urlsplit(self.path).path, "body": json.loads(raw or b"{}"),
                                           "at": time.monotonic()})
                    failing = receiver.fail_first > 0
                    if failing:
                        receiver.fail_first -= 1
                if receiver.delay and receiver.validation != "slow":
                    time.sleep(receiver.delay)
                self._answer(500 if failing else receiver.status, b"", "text/plain")

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/api/notifications"
        self.lifecycle_url = f"http://127.0.0.1:{self._server.server_address[1]}/api/lifecycle"

    def items(self, path: str = "/api/notifications") -> list[dict[str, Any]]:
        with self._lock:
            return [item for post in self.posts if post["path"] == path for item in post["body"].get("value", [])]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.02)
        return predicate()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(autouse=True)
def _trust_simulator_ca(graphsim: GraphSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", graphsim.ca_file)


@pytest.fixture
def confidential_app(graphsim: GraphSimulator) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        DEFAULT_CLIENT_ID, client_credential=DEFAULT_CLIENT_SECRET, authority=graphsim.authority("common"),
        instance_discovery=False, verify=graphsim.ca_file)


def follow_authorize(auth_uri: str, ca_file: str) -> dict[str, str]:
    """Follow the authorize request as a browser would; return the parameters sent to the redirect URI."""
    response = requests.get(auth_uri, verify=ca_file, allow_redirects=False, timeout=10)
    if response.status_code == 302:
        return {k: v[0] for k, v in parse_qs(urlsplit(response.headers["Location"]).query).items()}
    assert response.status_code == 200, response.text
    return parse_form_post(response.text)


def parse_form_post(page: str) -> dict[str, str]:
    """The hidden inputs of a form_post response page."""
    import html
    import re

    return {html.unescape(name): html.unescape(value)
            for name, value in re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)"', page)}


SignIn = Callable[..., dict[str, Any]]


@pytest.fixture
def sign_in(graphsim: GraphSimulator) -> SignIn:
    def run(app: msal.ClientApplication, upn: str, scopes: list[str] | None = None,
            response_mode: str = "query") -> dict[str, Any]:
        flow = app.initiate_auth_code_flow(scopes or ["User.Read", "Mail.ReadWrite"],
                                           redirect_uri=DEFAULT_REDIRECT_URI, login_hint=upn,
                                           response_mode=response_mode)
        auth_response = follow_authorize(flow["auth_uri"], graphsim.ca_file)
        return app.acquire_token_by_auth_code_flow(flow, auth_response)

    return run


@pytest.fixture
def user_token(confidential_app: msal.ConfidentialClientApplication, sim_user: dict[str, Any],
               sign_in: SignIn) -> str:
    result = sign_in(confidential_app, sim_user["userPrincipalName"])
    assert "access_token" in result, result
    return str(result["access_token"])


@pytest.fixture
def graph(graphsim: GraphSimulator, user_token: str) -> Iterator[requests.Session]:
    """A keep-alive session on Graph with ``sim_user``'s delegated token."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {user_token}"
    yield session
    session.close()


class StaticToken(AccessTokenProvider):
    """The SDK's token source: one access token, for the simulator's host only."""

    def __init__(self, token: str, host: str) -> None:
        self._token = token
        self._hosts = AllowedHostsValidator([host])

    async def get_authorization_token(self, uri: str, additional_authentication_context: dict[str, Any] | None = None,
                                      ) -> str:
        return self._token if self._hosts.is_url_host_valid(uri) else ""

    def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
        return self._hosts


class GraphSdk:
    """``GraphServiceClient`` on the simulator, and a loop to run its coroutines on."""

    def __init__(self, simulator: GraphSimulator, token: str) -> None:
        self.loop = asyncio.new_event_loop()
        trust = ssl.create_default_context(cafile=simulator.ca_file)
        self.http = GraphClientFactory.create_with_default_middleware(
            client=httpx.AsyncClient(base_url=simulator.graph_url, verify=trust, timeout=30),
            options=graph_middleware_options)
        auth = BaseBearerTokenAuthenticationProvider(StaticToken(token, simulator.host))
        adapter = GraphRequestAdapter(auth, client=self.http)
        adapter.base_url = simulator.graph_url
        self.client = GraphServiceClient(request_adapter=adapter)

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run_until_complete(coroutine)

    def close(self) -> None:
        self.loop.run_until_complete(self.http.aclose())
        self.loop.close()


@pytest.fixture
def graph_sdk(graphsim: GraphSimulator, user_token: str) -> Iterator[GraphSdk]:
    sdk = GraphSdk(graphsim, user_token)
    yield sdk
    sdk.close()
