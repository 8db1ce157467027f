"""OAuth 2.0 / OpenID Connect protocol helpers of the simulated identity platform.

Entra ID's error shape (``error``, ``error_description`` starting with ``AADSTSnnnn:``,
``error_codes``, ``trace_id``, ``correlation_id``, ``timestamp``), scope parsing, PKCE
S256 (RFC 7636) and the redirect URI rules.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import uuid
from urllib.parse import urlsplit

from .jwt import b64url_encode
from .state import (
    DEFAULT_TENANT_ID,
    App,
)
from .wire import Request, Response

GRAPH_AUDIENCE = "https://graph.microsoft.com"
GRAPH_RESOURCE_APP_ID = "00000003-0000-0000-c000-000000000000"
OIDC_SCOPES = {"openid", "profile", "offline_access", "email"}
GRAPH_DELEGATED_SCOPES = {
    "User.Read", "User.ReadBasic.All", "User.Read.All", "Mail.Read", "Mail.ReadBasic", "Mail.ReadWrite",
    "Mail.Send", "MailboxSettings.Read", "Files.Read", "Files.Read.All", "Files.ReadWrite", "Files.ReadWrite.All",
    "offline_access",
}
DEFAULT_DELEGATED = ["User.Read", "Mail.ReadWrite"]
KNOWN_TENANTS = {"common", "organizations", "consumers", DEFAULT_TENANT_ID, "contoso.test"}


def aad_error(status: int, error: str, code: int, description: str, headers: dict[str, str] | None = None) -> Response:
    trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
    timestamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return Response.json(
        status,
        {
            "error": error,
            "error_description": f"AADSTS{code}: {description} Trace ID: {trace_id} "
            f"Correlation ID: {correlation_id} Timestamp: {timestamp}",
            "error_codes": [code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": f"https://login.microsoftonline.com/error?code={code}",
        },
        dict({"Cache-Control": "no-store", "Pragma": "no-cache"}, **(headers or {})),
    )


class ScopeError(ValueError):
    pass


def parse_scopes(raw: str) -> tuple[list[str], list[str]]:
    """Split a scope string into (Graph scopes, OIDC scopes); ``ScopeError`` on unknown ones."""
    graph: list[str] = []
    oidc: list[str] = []
    for item in raw.split():
        name = item
        for prefix in (GRAPH_AUDIENCE + "/", GRAPH_RESOURCE_APP_ID + "/", "https://graph.microsoft.com//"):
            if name.lower().startswith(prefix.lower()):
                name = name[len(prefix):]
        if name in OIDC_SCOPES:
            if name not in oidc:
                oidc.append(name)
            continue
        if name == ".default":
            for s in DEFAULT_DELEGATED:
                if s not in graph:
                    graph.append(s)
            continue
        match = next((s for s in GRAPH_DELEGATED_SCOPES if s.lower() == name.lower()), None)
        if match is None:
            raise ScopeError(item)
        if match not in graph:
            graph.append(match)
    return graph, oidc


def pkce_s256(verifier: str) -> str:
    return b64url_encode(hashlib.sha256(verifier.encode("ascii")).digest())


def is_public_redirect(uri: str) -> bool:
    parts = urlsplit(uri)
    return parts.scheme == "http" and parts.hostname == "localhost"


def redirect_uri_allowed(uri: str, registered: list[str]) -> bool:
    """Exact match, except that a registered ``http://localhost`` accepts any port (desktop apps)."""
    if uri in registered:
        return True
    if not is_public_redirect(uri):
        return False
    parts = urlsplit(uri)
    portless = f"http://localhost{parts.path}"
    return portless in registered or (parts.path in ("", "/") and "http://localhost" in registered)


def authenticate_client(apps: dict[str, App], request: Request,
                        form: dict[str, str]) -> tuple[App | None, bool, Response | None]:
    """The client of a token request (secret in the form or HTTP Basic): (app, secret_presented, error)."""
    client_id = form.get("client_id")
    secret = form.get("client_secret")
    auth = request.header("authorization")
    if auth and auth.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(auth[6:]).decode("utf-8")
            client_id, _, secret = decoded.partition(":")
        except ValueError:
            return None, False, aad_error(401, "invalid_client", 7000215, "Invalid client secret provided.")
    if not client_id:
        return None, False, aad_error(400, "invalid_request", 900144,
                                      "The request body must contain the following parameter: 'client_id'.")
    app = apps.get(client_id)
    if app is None:
        return None, False, aad_error(
            400, "unauthorized_client", 700016,
            f"Application with identifier '{client_id}' was not found in the directory "
            f"'{DEFAULT_TENANT_ID}'. This can happen if the application has not been installed by the "
            "administrator of the tenant or consented to by any user in the tenant.")
    if form.get("client_assertion"):
        return app, True, aad_error(401, "invalid_client", 7000215,
                                    "Invalid client assertion: the simulator accepts client secrets only.")
    if secret is not None and not hmac.compare_digest(secret.encode(), app.client_secret.encode()):
        return app, True, aad_error(
            401, "invalid_client", 7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client "
            f"secret value, not the client secret ID, for a secret added to app '{app.client_id}'.")
    return app, secret is not None, None

def secret_required() -> Response:
    return aad_error(401, "invalid_client", 7000218,
                     "The request body must contain the following parameter: 'client_assertion' or "
                     "'client_secret'.")
