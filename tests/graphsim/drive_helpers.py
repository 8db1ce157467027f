"""What the drive tests share: a Graph session with a Files scope, and seeding through the control API."""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Coroutine
from typing import Any

import httpx
import requests
from kiota_abstractions.authentication import (
    AccessTokenProvider,
    AllowedHostsValidator,
    BaseBearerTokenAuthenticationProvider,
)
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.graph_request_adapter import options as graph_middleware_options
from msgraph_core import GraphClientFactory

from devstack.graphsim import GraphSimulator

from .conftest import ControlSession, SignIn

FILES_SCOPES = ["User.Read", "Files.ReadWrite.All"]


class GraphSession(requests.Session):
    """``requests.Session`` with a bearer token whose relative URLs go to ``{graph_url}``."""

    def __init__(self, simulator: GraphSimulator, token: str) -> None:
        super().__init__()
        self.simulator = simulator
        self.token = token
        self.verify = simulator.ca_file
        self.headers["Authorization"] = f"Bearer {token}"

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if isinstance(url, str) and url.startswith("/"):
            url = self.simulator.graph_url + url
        kwargs.setdefault("timeout", 20)
        return super().request(method, url, *args, **kwargs)


def graph_for(graphsim: GraphSimulator, app: Any, sign_in: SignIn, upn: str,
              scopes: list[str] | None = None) -> GraphSession:
    result = sign_in(app, upn, scopes or FILES_SCOPES)
    assert "access_token" in result, result
    return GraphSession(graphsim, str(result["access_token"]))


def seed(sim: ControlSession, user: dict[str, Any], path: str, content: bytes | str = b"", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"path": path, **extra}
    if isinstance(content, bytes):
        body["contentBase64"] = base64.b64encode(content).decode()
    else:
        body["content"] = content
    response = sim.post(f"/users/{user['id']}/drive/items", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


class _StaticToken(AccessTokenProvider):
    """The SDK's token source: one access token, for the simulator's host only."""

    def __init__(self, token: str, host: str) -> None:
        self._token = token
        self._hosts = AllowedHostsValidator([host])

    async def get_authorization_token(self, uri: str,
                                      additional_authentication_context: dict[str, Any] | None = None) -> str:
        return self._token if self._hosts.is_url_host_valid(uri) else ""

    def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
        return self._hosts


class DriveSdk:
    """msgraph-sdk's ``GraphServiceClient`` on the simulator (with the SDK's own middleware), and a loop."""

    def __init__(self, simulator: GraphSimulator, token: str) -> None:
        self.loop = asyncio.new_event_loop()
        trust = ssl.create_default_context(cafile=simulator.ca_file)
        self.http = GraphClientFactory.create_with_default_middleware(
            client=httpx.AsyncClient(base_url=simulator.graph_url, verify=trust, timeout=60),
            options=graph_middleware_options)
        self.adapter = GraphRequestAdapter(BaseBearerTokenAuthenticationProvider(
            _StaticToken(token, simulator.host)), client=self.http)
        self.adapter.base_url = simulator.graph_url
        self.client = GraphServiceClient(request_adapter=self.adapter)

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run_until_complete(coroutine)

    def close(self) -> None:
        self.loop.run_until_complete(self.http.aclose())
        self.loop.close()
