"""The Microsoft identity platform v2.0 endpoints, as MSAL for Python uses them.

Paths and answers follow login.microsoftonline.com: OpenID discovery, JWKS, authorize
(sign-in/consent page or auto-consent for a known ``login_hint``; ``query`` and
``form_post`` response modes; PKCE S256 required), token (authorization code, refresh
token with rotation, client credentials, device code) and the device code endpoints.
Errors carry ``error``, ``error_description`` starting with ``AADSTSnnnn:``,
``error_codes``, ``trace_id``, ``correlation_id`` and ``timestamp`` as Entra ID's do.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
import string
import time
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from .jwt import b64url_encode, new_token_id
from .state import (
    DEFAULT_TENANT_ID,
    App,
    AuthCode,
    DeviceCode,
    RefreshToken,
    User,
)
from .wire import Request, Response, escape

if TYPE_CHECKING:
    from .server import GraphSimulator

GRAPH_AUDIENCE = "https://graph.microsoft.com"
GRAPH_RESOURCE_APP_ID = "00000003-0000-0000-c000-000000000000"
OIDC_SCOPES = {"openid", "profile", "offline_access", "email"}
GRAPH_DELEGATED_SCOPES = {
    "User.Read", "User.ReadBasic.All", "User.Read.All", "Mail.Read", "Mail.ReadBasic", "Mail.ReadWrite",
    "Mail.Send", "MailboxSettings.Read", "Files.Read", "Files.Read.All", "Files.ReadWrite", "Files.ReadWrite.All",
    "offline_access",
}
DEFAULT_DELEGATED = ["User.Read", "Mail.ReadWrite"]
APPLICATION_ROLES = ["Mail.Read", "Mail.ReadWrite", "User.Read.All"]
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


class IdentityPlatform:
    def __init__(self, sim: GraphSimulator) -> None:
        self.sim = sim
        self.state = sim.state

    # routing ----------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        parts = [p for p in request.path.split("/") if p]
        if len(parts) < 2:
            return aad_error(404, "invalid_request", 90002, "Unknown endpoint.")
        tenant, rest = parts[0], "/".join(parts[1:])
        if tenant not in KNOWN_TENANTS:
            return aad_error(400, "invalid_tenant", 90002,
                             f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID.")
        if rest == "v2.0/.well-known/openid-configuration" and request.method == "GET":
            return Response.json(200, self.openid_configuration(tenant))
        if rest == "discovery/v2.0/keys" and request.method == "GET":
            return Response.json(200, self.sim.key.jwks())
        if rest == "oauth2/v2.0/authorize" and request.method in ("GET", "POST"):
            return self.authorize(request, tenant)
        if rest == "oauth2/v2.0/token" and request.method == "POST":
            return self.token(request)
        if rest == "oauth2/v2.0/devicecode" and request.method == "POST":
            return self.devicecode(request)
        if rest == "oauth2/deviceauth" and request.method in ("GET", "POST"):
            return self.deviceauth(request)
        return aad_error(404, "invalid_request", 90002, "Unknown endpoint.")

    def openid_configuration(self, tenant: str) -> dict[str, Any]:
        base = self.sim.base_url
        issuer_tenant = "{tenantid}" if tenant in ("common", "organizations", "consumers") else DEFAULT_TENANT_ID
        return {
            "token_endpoint": f"{base}/{tenant}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{base}/{tenant}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base}/{issuer_tenant}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{self.sim.graph_url.removesuffix('/v1.0')}/oidc/userinfo",
            "authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/{tenant}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "acr", "nonce",
                                 "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"],
            "code_challenge_methods_supported": ["plain", "S256"],
            "tenant_region_scope": "WW",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": self.sim.graph_url.removeprefix("https://").removesuffix("/v1.0"),
        }

    # tokens -----------------------------------------------------------------------------
    def _pairwise_sub(self, user: User, client_id: str) -> str:
        return b64url_encode(hashlib.sha256(f"{user.id}|{client_id}".encode()).digest()[:24])

    def access_token(
        self, app: App, user: User | None, scopes: list[str], confidential: bool, lifetime: int | None = None
    ) -> str:
        now = int(time.time())
        if lifetime is None:
            lifetime = self.state.settings.access_token_lifetime_seconds
        claims: dict[str, Any] = {
            "aud": GRAPH_AUDIENCE,
            "iss": f"https://sts.windows.net/{app.tenant_id if user is None else user.tenant_id}/",
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "app_displayname": app.display_name,
            "appid": app.client_id,
            "appidacr": "1" if confidential else "0",
            "uti": new_token_id(),
            "ver": "1.0",
        }
        if user is None:
            sp_oid = str(uuid.uuid5(uuid.NAMESPACE_URL, "sp:" + app.client_id))
            claims.update({"idtyp": "app", "oid": sp_oid, "sub": sp_oid, "tid": app.tenant_id,
                           "roles": list(APPLICATION_ROLES)})
        else:
            claims.update({
                "idtyp": "user",
                "name": user.display_name,
                "oid": user.id,
                "scp": " ".join(scopes + ["openid", "profile", "email"]),
                "sub": self._pairwise_sub(user, app.client_id),
                "tid": user.tenant_id,
                "unique_name": user.user_principal_name,
                "upn": user.user_principal_name,
            })
        return self.sim.key.sign(claims)

    def id_token(self, app: App, user: User, nonce: str | None) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "aud": app.client_id,
            "iss": f"{self.sim.base_url}/{user.tenant_id}/v2.0",
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "name": user.display_name,
            "oid": user.id,
            "preferred_username": user.user_principal_name,
            "rh": "0.AAAA" + new_token_id(),
            "sid": str(uuid.uuid5(uuid.NAMESPACE_URL, "sid:" + user.id)),
            "sub": self._pairwise_sub(user, app.client_id),
            "tid": user.tenant_id,
            "uti": new_token_id(),
            "ver": "2.0",
        }
        if nonce:
            claims["nonce"] = nonce
        return self.sim.key.sign(claims)

    def _token_response(self, app: App, user: User, graph_scopes: list[str], oidc: list[str], *,
                        confidential: bool, nonce: str | None, client_info: bool) -> Response:
        lifetime = self.state.settings.access_token_lifetime_seconds
        body: dict[str, Any] = {
            "token_type": "Bearer",
            "scope": " ".join(graph_scopes + ["profile", "openid", "email"]),
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": self.access_token(app, user, graph_scopes, confidential),
        }
        if "offline_access" in oidc or "offline_access" in graph_scopes:
            token = "1.AQ" + secrets.token_urlsafe(48)
            with self.state.lock:
                self.state.refresh_tokens[token] = RefreshToken(
                    token, app.client_id, user.id, list(graph_scopes), not confidential, time.time())
            body["refresh_token"] = token
        if "openid" in oidc:
            body["id_token"] = self.id_token(app, user, nonce)
        if client_info:
            info = json.dumps({"uid": user.id, "utid": user.tenant_id}, separators=(",", ":"))
            body["client_info"] = b64url_encode(info.encode())
        return Response.json(200, body, {"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _authenticate_client(self, request: Request, form: dict[str, str]) -> tuple[App | None, bool, Response | None]:
        """Return (app, secret_presented, error)."""
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
        app = self.state.apps.get(client_id)
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

    @staticmethod
    def _secret_required() -> Response:
        return aad_error(401, "invalid_client", 7000218,
                         "The request body must contain the following parameter: 'client_assertion' or "
                         "'client_secret'.")

    def token(self, request: Request) -> Response:
        form = request.form()
        app, has_secret, error = self._authenticate_client(request, form)
        if error is not None or app is None:
            return error or self._secret_required()
        grant = form.get("grant_type", "")
        if grant == "authorization_code":
            return self._grant_authorization_code(app, has_secret, form)
        if grant == "refresh_token":
            return self._grant_refresh_token(app, has_secret, form)
        if grant == "client_credentials":
            return self._grant_client_credentials(app, has_secret, form)
        if grant in ("urn:ietf:params:oauth:grant-type:device_code", "device_code"):
            return self._grant_device_code(app, form)
        return aad_error(400, "unsupported_grant_type", 70003,
                         f"The app requested an unsupported grant type '{grant}'.")

    def _grant_authorization_code(self, app: App, has_secret: bool, form: dict[str, str]) -> Response:
        # A desktop app (loopback "http://localhost" redirect) is a public client and sends no secret;
        # a web redirect URI makes the app confidential: the secret is then required.
        public = is_public_redirect(form.get("redirect_uri", ""))
        if not has_secret and not public:
            return self._secret_required()
        code_value = form.get("code", "")
        with self.state.lock:
            code = self.state.codes.get(code_value)
            if code is None:
                return aad_error(400, "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid.")
            if code.redeemed:
                return aad_error(400, "invalid_grant", 54005,
                                 "OAuth2 Authorization code was already redeemed, please retry with a new valid "
                                 "code or use an existing refresh token.")
            if code.expires_at < time.time():
                return aad_error(400, "invalid_grant", 70008,
                                 "The provided authorization code or refresh token has expired due to "
                                 "inactivity. Send a new interactive authorization request for this user and "
                                 "resource.")
            if code.client_id != app.client_id:
                return aad_error(400, "invalid_grant", 70000, "Provided grant is invalid or malformed.")
            if form.get("redirect_uri") != code.redirect_uri:
                return aad_error(400, "invalid_grant", 500112,
                                 f"The reply address '{form.get('redirect_uri')}' does not match the reply "
                                 f"address '{code.redirect_uri}' provided when requesting Authorization code.")
            verifier = form.get("code_verifier")
            if not verifier or not hmac.compare_digest(pkce_s256(verifier), code.code_challenge):
                return aad_error(400, "invalid_grant", 501481,
                                 "The Code_Verifier does not match the code_challenge supplied in the "
                                 "authorization request.")
            code.redeemed = True
            user = self.state.users[code.user_id]
        graph_scopes = [s for s in code.scopes if s not in OIDC_SCOPES]
        oidc = [s for s in code.scopes if s in OIDC_SCOPES]
        return self._token_response(app, user, graph_scopes, oidc, confidential=has_secret, nonce=code.nonce,
                                    client_info=form.get("client_info") == "1")

    def _grant_refresh_token(self, app: App, has_secret: bool, form: dict[str, str]) -> Response:
        with self.state.lock:
            rt = self.state.refresh_tokens.get(form.get("refresh_token", ""))
            if rt is None:
                return aad_error(400, "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid.")
            if rt.client_id != app.client_id:
                return aad_error(400, "invalid_grant", 70000, "Provided grant is invalid or malformed.")
            if rt.public_client and has_secret:
                return aad_error(401, "invalid_client", 700025,
                                 "Client is public so neither 'client_assertion' nor 'client_secret' should "
                                 "be presented.")
            if not rt.public_client and not has_secret:
                return self._secret_required()
            user = self.state.users.get(rt.user_id)
            if user is None or rt.issued_at < user.tokens_valid_from:
                issued = dt.datetime.fromtimestamp(rt.issued_at, dt.UTC).strftime("%m/%d/%Y %H:%M:%S")
                valid_from = dt.datetime.fromtimestamp(
                    user.tokens_valid_from if user else time.time(), dt.UTC).strftime("%m/%d/%Y %H:%M:%S")
                return aad_error(400, "invalid_grant", 50173,
                                 "The provided grant has expired due to it being revoked, a fresh auth token "
                                 "is needed. The user might have changed or reset their password. The grant "
                                 f"was issued on '{issued}' and the TokensValidFrom date (before which tokens "
                                 f"are not valid) for this user is '{valid_from}'.")
        try:
            graph_scopes, oidc = parse_scopes(form.get("scope", ""))
        except ScopeError as exc:
            return aad_error(400, "invalid_scope", 70011,
                             f"The provided request must include a 'scope' input parameter. The provided value "
                             f"for the input parameter 'scope' is not valid. The scope '{exc}' does not exist.")
        missing = [s for s in graph_scopes if s not in rt.scopes and s != "offline_access"]
        if missing:
            return aad_error(400, "invalid_grant", 65001,
                             f"The user or administrator has not consented to use the application with ID "
                             f"'{app.client_id}' named '{app.display_name}'. Send an interactive "
                             "authorization request for this user and resource.")
        scopes = list(rt.scopes)  # Entra ID answers with every scope granted for the resource
        if "offline_access" not in oidc:
            oidc.append("offline_access")  # a refresh grant always returns a new refresh token (rotation)
        response = self._token_response(app, user, scopes, oidc, confidential=not rt.public_client,
                                        nonce=None, client_info=form.get("client_info") == "1")
        if response.status == 200:  # the rotated token carries the whole grant, not the subset asked for
            with self.state.lock:
                new_token = json.loads(response.body)["refresh_token"]
                self.state.refresh_tokens[new_token].scopes = list(rt.scopes)
        return response

    def _grant_client_credentials(self, app: App, has_secret: bool, form: dict[str, str]) -> Response:
        if not has_secret:
            return self._secret_required()
        scope = form.get("scope", "").strip()
        if not scope.endswith("/.default") or " " in scope:
            return aad_error(400, "invalid_scope", 1002012,
                             f"The provided value for scope {scope} is not valid. Client credential flows must "
                             "have a scope value with /.default suffixed to the resource identifier "
                             "(application ID URI).")
        lifetime = self.state.settings.access_token_lifetime_seconds
        return Response.json(200, {
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": self.access_token(app, None, [], True),
        }, {"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _grant_device_code(self, app: App, form: dict[str, str]) -> Response:
        with self.state.lock:
            dc = self.state.device_codes.get(form.get("device_code", ""))
            if dc is None or dc.client_id != app.client_id:
                return aad_error(400, "invalid_grant", 70000, "Provided grant is invalid or malformed.")
            if dc.redeemed:
                return aad_error(400, "invalid_grant", 54005,
                                 "OAuth2 Authorization code was already redeemed, please retry with a new valid "
                                 "code or use an existing refresh token.")
            if dc.expires_at < time.time():
                return aad_error(400, "expired_token", 70019,
                                 "Verification code expired. Restart the device code flow.")
            if dc.declined:
                return aad_error(400, "authorization_declined", 70000,
                                 "The user declined the sign-in request.")
            if dc.user_id is None:
                return aad_error(400, "authorization_pending", 70016,
                                 "OAuth 2.0 device flow error. Authorization is pending. Continue polling.")
            dc.redeemed = True
            user = self.state.users[dc.user_id]
            graph_scopes, oidc = list(dc.scopes), ["openid", "profile", "offline_access"]
        return self._token_response(app, user, graph_scopes, oidc, confidential=False, nonce=None,
                                    client_info=form.get("client_info") == "1")

    # authorize --------------------------------------------------------------------------
    def authorize(self, request: Request, tenant: str) -> Response:
        params = dict(request.query)
        posted: dict[str, str] = {}
        if request.method == "POST":
            posted = request.form()
            params = {k[2:]: v for k, v in posted.items() if k.startswith("p:")}
        client_id = params.get("client_id", "")
        app = self.state.apps.get(client_id)
        if app is None:
            return self._error_page(400, 700016, f"Application with identifier '{client_id}' was not found in "
                                                 f"the directory '{DEFAULT_TENANT_ID}'.")
        redirect_uri = params.get("redirect_uri", "")
        if not redirect_uri_allowed(redirect_uri, app.redirect_uris):
            return self._error_page(400, 50011, f"The redirect URI '{redirect_uri}' specified in the request "
                                                f"does not match the redirect URIs configured for the "
                                                f"application '{client_id}'.")
        state = params.get("state")
        mode = params.get("response_mode", "query")
        if mode not in ("query", "form_post"):
            return self._error_page(400, 900144, f"The response_mode '{mode}' is not supported by the simulator.")
        if params.get("response_type") != "code":
            return self._auth_response(redirect_uri, mode, self._error_params(
                "unsupported_response_type", 700054, "response_type must be 'code'.", state))
        if not params.get("code_challenge") or params.get("code_challenge_method") != "S256":
            return self._auth_response(redirect_uri, mode, self._error_params(
                "invalid_request", 9002325, "Proof Key for Code Exchange (S256) is required for this app.", state))
        try:
            graph_scopes, oidc = parse_scopes(params.get("scope", ""))
        except ScopeError as exc:
            return self._auth_response(redirect_uri, mode, self._error_params(
                "invalid_scope", 70011, f"The provided value for the input parameter 'scope' is not valid. "
                                        f"The scope '{exc}' does not exist.", state))
        if request.method == "POST":
            if posted.get("action") != "accept":
                return self._auth_response(redirect_uri, mode, self._error_params(
                    "access_denied", 65004, "User declined to consent to access the app.", state,
                    subcode="cancel"))
            login = (posted.get("login") or posted.get("user") or "").strip()
            user = self.state.find_user(login) if login else None
            if user is None:
                return self._consent_page(app, params, graph_scopes,
                                          f"AADSTS50034: The user account {login} does not exist in the "
                                          f"directory. To sign into this application, the account must be "
                                          f"added to the directory.")
            return self._issue_code(app, user, params, graph_scopes + oidc, redirect_uri, mode, state)
        hint = params.get("login_hint", "")
        user = self.state.find_user(hint) if hint else None
        if user is not None and self.state.settings.auto_consent:
            return self._issue_code(app, user, params, graph_scopes + oidc, redirect_uri, mode, state)
        return self._consent_page(app, params, graph_scopes, None)

    def _issue_code(self, app: App, user: User, params: dict[str, str], scopes: list[str], redirect_uri: str,
                    mode: str, state: str | None) -> Response:
        code_value = "1.AQ" + secrets.token_urlsafe(64)
        with self.state.lock:
            now = time.time()
            for stale in [c.code for c in self.state.codes.values() if c.expires_at < now - 3600]:
                del self.state.codes[stale]
            self.state.codes[code_value] = AuthCode(
                code_value, app.client_id, redirect_uri, user.id, list(scopes), params["code_challenge"],
                params.get("nonce"), time.time() + self.state.settings.auth_code_lifetime_seconds)
        out = {"code": code_value}
        if params.get("client_info") == "1":
            info = json.dumps({"uid": user.id, "utid": user.tenant_id}, separators=(",", ":"))
            out["client_info"] = b64url_encode(info.encode())
        if state is not None:
            out["state"] = state
        out["session_state"] = str(uuid.uuid5(uuid.NAMESPACE_URL, "session:" + user.id))
        return self._auth_response(redirect_uri, mode, out)

    @staticmethod
    def _error_params(error: str, code: int, description: str, state: str | None,
                      subcode: str | None = None) -> dict[str, str]:
        trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
        timestamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        out = {"error": error}
        if subcode:
            out["error_subcode"] = subcode
        out["error_description"] = (f"AADSTS{code}: {description} Trace ID: {trace_id} Correlation ID: "
                                    f"{correlation_id} Timestamp: {timestamp}")
        if state is not None:
            out["state"] = state
        return out

    @staticmethod
    def _auth_response(redirect_uri: str, mode: str, values: dict[str, str]) -> Response:
        if mode == "form_post":
            inputs = "".join(f'<input type="hidden" name="{escape(k)}" value="{escape(v)}" />'
                             for k, v in values.items())
            page = (
                "<html><head><title>Working...</title></head><body>"
                f'<form method="POST" name="hiddenform" action="{escape(redirect_uri)}">{inputs}'
                '<noscript><p>Script is disabled. Click Submit to continue.</p>'
                '<input type="submit" value="Submit" /></noscript></form>'
                "<script language=\"javascript\">window.setTimeout('document.forms[0].submit()', 0);</script>"
                "</body></html>"
            )
            return Response.html(200, page)
        separator = "&" if "?" in redirect_uri else "?"
        return Response.redirect(redirect_uri + separator + urlencode(values))

    @staticmethod
    def _error_page(status: int, code: int, description: str) -> Response:
        return Response.html(status, (
            "<!DOCTYPE html><html><head><title>Sign in to your account</title></head><body>"
            f"<h1>Sorry, but we're having trouble signing you in.</h1><p id=\"error\">AADSTS{code}: "
            f"{escape(description)}</p></body></html>"))

    def _consent_page(self, app: App, params: dict[str, str], scopes: list[str], message: str | None) -> Response:
        hidden = "".join(f'<input type="hidden" name="p:{escape(k)}" value="{escape(v)}" />'
                         for k, v in params.items())
        hint = params.get("login_hint", "")
        options = "".join(
            f'<option value="{escape(u.user_principal_name)}"'
            f'{" selected" if u.user_principal_name.lower() == hint.lower() else ""}>'
            f"{escape(u.display_name)} ({escape(u.user_principal_name)})</option>"
            for u in self.state.users.values())
        permissions = "".join(f"<li>{escape(s)}</li>" for s in scopes)
        error = f'<p id="error" role="alert">{escape(message)}</p>' if message else ""
        return Response.html(200, (
            "<!DOCTYPE html><html><head><title>Sign in to your account</title></head><body>"
            f"<h1>Sign in</h1>{error}"
            f"<p><b>{escape(app.display_name)}</b> wants to:</p><ul>{permissions}"
            "<li>Maintain access to data you have given it access to</li></ul>"
            '<form method="POST" id="consent">'
            f"{hidden}"
            f'<label>Account <select name="user">{options}</select></label><br/>'
            f'<label>Or sign in as <input type="text" name="login" value="" placeholder="{escape(hint)}" />'
            "</label><br/>"
            '<button type="submit" name="action" value="accept" id="accept">Accept</button>'
            '<button type="submit" name="action" value="cancel" id="cancel">Cancel</button>'
            "</form></body></html>"))

    # device code ------------------------------------------------------------------------
    def devicecode(self, request: Request) -> Response:
        form = request.form()
        app = self.state.apps.get(form.get("client_id", ""))
        if app is None:
            return aad_error(400, "unauthorized_client", 700016,
                             f"Application with identifier '{form.get('client_id')}' was not found in the "
                             f"directory '{DEFAULT_TENANT_ID}'.")
        try:
            graph_scopes, _ = parse_scopes(form.get("scope", ""))
        except ScopeError as exc:
            return aad_error(400, "invalid_scope", 70011,
                             f"The provided value for the input parameter 'scope' is not valid. "
                             f"The scope '{exc}' does not exist.")
        alphabet = string.ascii_uppercase + string.digits
        user_code = "".join(secrets.choice(alphabet) for _ in range(9))
        device_code = "DAQABAAEAAA" + secrets.token_urlsafe(48)
        settings = self.state.settings
        with self.state.lock:
            self.state.device_codes[device_code] = DeviceCode(
                device_code, user_code, app.client_id, graph_scopes,
                time.time() + settings.device_code_lifetime_seconds)
        uri = f"{self.sim.base_url}/common/oauth2/deviceauth"
        return Response.json(200, {
            "user_code": user_code,
            "device_code": device_code,
            "verification_uri": uri,
            "expires_in": settings.device_code_lifetime_seconds,
            "interval": settings.device_code_interval_seconds,
            "message": f"To sign in, use a web browser to open the page {uri} and enter the code "
                       f"{user_code} to authenticate.",
        })

    def deviceauth(self, request: Request) -> Response:
        if request.method == "GET":
            return self._device_page(request.query.get("code", ""), None)
        form = request.form()
        user_code = form.get("code", "").strip().upper()
        with self.state.lock:
            dc = next((d for d in self.state.device_codes.values()
                       if d.user_code == user_code and not d.redeemed and d.expires_at > time.time()), None)
            if dc is None:
                return self._device_page(user_code, "That code didn't work. Check the code and try again.")
            if form.get("action") != "accept":
                dc.declined = True
                return Response.html(200, "<html><body><h1>Sign-in cancelled</h1></body></html>")
            login = (form.get("login") or form.get("user") or "").strip()
            user = self.state.find_user(login) if login else None
            if user is None:
                return self._device_page(user_code, f"AADSTS50034: The user account {login} does not exist "
                                                    "in the directory.")
            dc.user_id = user.id
            app = self.state.apps[dc.client_id]
        return Response.html(200, (
            "<html><body><h1>You're signed in</h1>"
            f"<p>You have signed in to {escape(app.display_name)} as {escape(user.user_principal_name)}. "
            "You may now close this window.</p></body></html>"))

    def _device_page(self, code: str, message: str | None) -> Response:
        options = "".join(f'<option value="{escape(u.user_principal_name)}">{escape(u.display_name)}</option>'
                          for u in self.state.users.values())
        error = f'<p id="error" role="alert">{escape(message)}</p>' if message else ""
        return Response.html(200, (
            "<!DOCTYPE html><html><head><title>Enter code</title></head><body><h1>Enter code</h1>"
            f'{error}<form method="POST" id="devicelogin">'
            f'<label>Code <input type="text" name="code" value="{escape(code)}" /></label><br/>'
            f'<label>Account <select name="user">{options}</select></label><br/>'
            '<label>Or sign in as <input type="text" name="login" value="" /></label><br/>'
            '<button type="submit" name="action" value="accept">Accept</button>'
            '<button type="submit" name="action" value="cancel">Cancel</button>'
            "</form></body></html>"))
