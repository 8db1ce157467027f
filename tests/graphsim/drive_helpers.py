"""What the drive tests share: a Graph session with a Files scope, and seeding through the control API."""

from __future__ import annotations

import base64
from typing import Any

import requests

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

