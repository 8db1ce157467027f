"""The interactive part of sign-in: the authorize endpoint (consent page, auto-consent for a
known ``login_hint``, ``query`` and ``form_post`` response modes) and the device code
endpoints (``devicecode`` and the page where the user enters the code).
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import string
import time
import uuid
from urllib.parse import urlencode

from .context import SimContext
from .jwt import b64url_encode
from .oauth import (
    ScopeError,
    aad_error,
    parse_scopes,
    redirect_uri_allowed,
)
from .state import (
    DEFAULT_TENANT_ID,
    App,
    AuthCode,
    DeviceCode,
    User,
)
from .wire import Request, Response, escape


class SignInPages:
    def __init__(self, ctx: SimContext) -> None:
        self.sim = ctx
        self.state = ctx.state

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
