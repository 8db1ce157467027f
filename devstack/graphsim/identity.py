"""The Microsoft identity platform v2.0 endpoints, as MSAL for Python uses them.

Paths and answers follow login.microsoftonline.com: OpenID discovery, JWKS, authorize
(sign-in/consent page or auto-consent for a known ``login_hint``; ``query`` and
``form_post`` response modes; PKCE S256 required), token (authorization code, refresh
token with rotation, client credentials, device code) and the device code endpoints.
Errors carry ``error``, ``error_description`` starting with ``AADSTSnnnn:``,
``error_codes``, ``trace_id``, ``correlation_id`` and ``timestamp`` as Entra ID's do.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import secrets
import time
from typing import Any

from .context import SimContext
from .jwt import b64url_encode
from .oauth import (
    KNOWN_TENANTS,
    OIDC_SCOPES,
    ScopeError,
    aad_error,
    authenticate_client,
    is_public_redirect,
    parse_scopes,
    pkce_s256,
    secret_required,
)
from .signin import SignInPages
from .state import (
    DEFAULT_TENANT_ID,
    App,
    RefreshToken,
    User,
)
from .tokens import TokenIssuer
from .wire import Request, Response


class IdentityPlatform:
    def __init__(self, ctx: SimContext) -> None:
        self.sim = ctx
        self.state = ctx.state
        self.tokens = TokenIssuer(ctx)
        self.pages = SignInPages(ctx)
        self.access_token = self.tokens.access_token
        self.id_token = self.tokens.id_token

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
            return self.pages.authorize(request, tenant)
        if rest == "oauth2/v2.0/token" and request.method == "POST":
            return self.token(request)
        if rest == "oauth2/v2.0/devicecode" and request.method == "POST":
            return self.pages.devicecode(request)
        if rest == "oauth2/deviceauth" and request.method in ("GET", "POST"):
            return self.pages.deviceauth(request)
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

    def token(self, request: Request) -> Response:
        form = request.form()
        app, has_secret, error = authenticate_client(self.state.apps, request, form)
        if error is not None or app is None:
            return error or secret_required()
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
            return secret_required()
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
                return secret_required()
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
            return secret_required()
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
