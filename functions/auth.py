"""Connecting an account in the browser: GET /api/connect/start, GET /api/connect,
GET|POST /api/auth/callback (docs/design.md "Connect").

Anonymous by nature: the browser arrives from the product or from Microsoft.
``/api/connect?session=...`` opens a connect session (``shared.connect_sessions``);
``/api/connect`` without one is served only where ``ALLOW_ANONYMOUS_CONNECT`` is true
(403 otherwise). Both set the browser-binding cookie the callback requires. Bad input
(unknown state, another browser's callback, an error from Microsoft, a malformed form) is
a 400 page or a redirect to the session's returnUrl with ``status=failed``, never a 500;
no page and no log line carries a code, a token, a state, a cookie or a session id.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl

import azure.functions as func

from functions.http import secured
from shared import bootstrap
from shared.browser_binding import read_browser_binding
from shared.connect_sessions import (
    AnonymousConnectRefusedError,
    CallbackOutcome,
    SessionOpened,
    SessionRefusedError,
    binding_cookie,
    complete_browser_connect,
    open_anonymous,
    open_session,
)
from shared.errors import (
    AuthFlowError,
    ConnectorError,
    IdentityError,
    InvalidInputError,
    ReauthRequiredError,
)
from shared.pages import PAGE_HEADERS, Page, connected_page, error_page, start_page

bp = func.Blueprint()
log = logging.getLogger(__name__)

# A form post from Microsoft carries a code, a state and a few short fields.
MAX_CALLBACK_BODY = 64 * 1024


def _html(page: Page) -> func.HttpResponse:
    return func.HttpResponse(page.html, status_code=page.status, mimetype="text/html", headers=PAGE_HEADERS)


def _redirect(location: str, *, cookie: str | None = None) -> func.HttpResponse:
    headers = {**PAGE_HEADERS, "Location": location}
    if cookie is not None:
        headers["Set-Cookie"] = cookie
    return func.HttpResponse(status_code=302, headers=headers)


def _to_microsoft(opened: SessionOpened) -> func.HttpResponse:
    return _redirect(opened.authorize_url, cookie=binding_cookie(opened.browser_binding))


@bp.function_name("connect_start_page")
@bp.route(route="connect/start", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@secured
def connect_start_page(req: func.HttpRequest) -> func.HttpResponse:
    settings = bootstrap.settings()
    if not settings.allow_anonymous_connect:
        return _html(error_page(403, "Connecting is not available here",
                                "Connecting needs a connect link from the product you are using."))
    return _html(start_page(f"{settings.public_base_url}/api/connect"))


@bp.function_name("connect")
@bp.route(route="connect", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@secured
def connect(req: func.HttpRequest) -> func.HttpResponse:
    services = bootstrap.services()
    binding = read_browser_binding(req.headers.get("cookie"))
    session_id = req.params.get("session")
    try:
        if session_id is not None:
            return _to_microsoft(open_session(services, session_id, binding))
        return _to_microsoft(open_anonymous(services, req.params.get("login_hint"), binding))
    except SessionRefusedError as exc:
        log.info("connect: connect link refused: %s", exc.error)
        location = CallbackOutcome(None, exc, exc.session).return_location()
        if location is not None:  # an expired session: the product says what to do
            return _redirect(location)
        return _html(error_page(400, "Cannot start the sign-in", str(exc), error=exc.error))
    except AnonymousConnectRefusedError as exc:
        return _html(error_page(403, "Connecting is not available here", str(exc)))
    except InvalidInputError as exc:
        return _html(error_page(400, "Cannot start the sign-in", str(exc)))
    except ConnectorError as exc:
        log.warning("connect: could not start a sign-in: %s", type(exc).__name__)
        return _html(error_page(503, "Sign-in is unavailable", "Please try again in a few minutes."))


@bp.function_name("auth_callback")
@bp.route(route="auth/callback", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
@secured
def auth_callback(req: func.HttpRequest) -> func.HttpResponse:
    response = _callback_fields(req)
    if response is None:
        return _html(error_page(400, "Sign-in failed", "The sign-in response could not be read."))
    services = bootstrap.services()
    try:
        outcome = complete_browser_connect(services, response, read_browser_binding(req.headers.get("cookie")))
    except ConnectorError as exc:  # not this browser's flow: nothing connected, nothing changed
        return _html(_failure_page(exc))
    # The binding cookie stays (10 minutes): another tab of this browser may be signing in too.
    location = outcome.return_location()
    if location is not None:
        return _redirect(location)
    if outcome.result is None:
        return _html(_failure_page(outcome.error or ConnectorError("connecting failed")))
    redirect = services.settings.post_connect_redirect_url
    if redirect:
        return _redirect(redirect)
    account = outcome.result.account
    return _html(
        connected_page(
            user=account.user_principal_name,
            display_name=account.display_name,
            reconnected=outcome.result.reconnected,
        )
    )


def _failure_page(exc: ConnectorError) -> Page:
    """What the user sees when connecting failed: what went wrong, never a secret."""
    if isinstance(exc, AuthFlowError):
        log.info("auth callback refused: %r", exc.error[:100])
        return error_page(400, "Sign-in failed", str(exc), error=exc.error, description=exc.description)
    if isinstance(exc, ReauthRequiredError | IdentityError):
        log.warning("auth callback: the identity platform refused: %s", type(exc).__name__)
        return error_page(502, "Sign-in failed", "Microsoft refused the sign-in. Please try again.")
    log.warning("auth callback: connecting failed: %s", type(exc).__name__)
    return error_page(
        503, "Connecting failed", "Your account could not be connected right now. Please try again."
    )


def _callback_fields(req: func.HttpRequest) -> dict[str, str] | None:
    """The callback's parameters: the query string, and the form for response_mode=form_post."""
    fields = {k: v for k, v in req.params.items()}
    if req.method.upper() == "POST":
        body = req.get_body() or b""
        if len(body) > MAX_CALLBACK_BODY:
            return None
        try:
            fields.update(parse_qsl(body.decode("utf-8"), keep_blank_values=False, max_num_fields=50))
        except (UnicodeDecodeError, ValueError):
            return None
    return fields
