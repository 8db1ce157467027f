"""Connect sessions: how a product connects the Microsoft account of one of its users.

1. The product's backend creates a session (``create_session``: ``POST
   /api/connect-sessions`` with a function key) for its user ``ownerId``, optionally with a
   ``returnUrl`` on one of ``ALLOWED_RETURN_ORIGINS``. The session is single use and must
   be opened within ``CONNECT_SESSION_MINUTES``.
2. The user's browser opens the session's ``connectUrl`` (``open_session``): the session is
   claimed for that browser (an ETag-conditional write: of two opens, one wins), a sign-in
   flow starts bound to the browser by an HttpOnly cookie (``SameSite=None; Secure``: the
   form_post callback arrives cross-site), and the browser goes on to Microsoft.
3. Microsoft posts the answer to the callback (``complete_browser_connect``). The flow's
   state is good only with the cookie of the browser that started it (RFC 9700 §4.7: login
   CSRF); the account is connected for the session's owner, the session completed or
   failed, and the browser sent to the ``returnUrl`` with ``accountId``, ``sessionId`` and
   ``status``.

Every browser flow is bound by the cookie, with a session or (where
``ALLOW_ANONYMOUS_CONNECT`` allows) without one. Nothing here logs a session id, a state,
a code or a cookie.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlparse

from shared.accounts import checked_owner
from shared.browser_binding import BINDING_COOKIE, new_browser_binding
from shared.config import is_loopback_host, origin_of
from shared.connect import AUTH_FLOW_LIFETIME, ConnectResult, claim_callback, complete_claimed, start_connect
from shared.errors import (
    AuthFlowError,
    ConcurrencyError,
    ConnectorError,
    NotFoundError,
    SessionInputError,
    SessionTooLargeError,
)
from shared.models import ConnectSession, ConnectSessionStatus

if TYPE_CHECKING:
    from shared.bootstrap import Services

log = logging.getLogger(__name__)

MAX_RETURN_URL_LENGTH = 2048
MAX_LOGIN_HINT_LENGTH = 256
MAX_REQUEST_BODY = 16 * 1024
SESSION_ID_PATTERN = re.compile(r"cs_[A-Za-z0-9_-]{43}")


# -- the browser binding -------------------------------------------------------------------


def binding_cookie(binding: str) -> str:
    """The ``Set-Cookie`` value. ``SameSite=None`` because Microsoft's form_post arrives
    from another site; ``Secure`` because browsers drop ``SameSite=None`` without it (they
    accept it from plain-http loopback hosts, so the local stack works as is)."""
    seconds = int(AUTH_FLOW_LIFETIME.total_seconds())
    return f"{BINDING_COOKIE}={binding}; Path=/api; Max-Age={seconds}; HttpOnly; Secure; SameSite=None"


# -- creating and reading sessions (the product's backend) ---------------------------------


def parse_session_request(body: bytes) -> dict[str, Any]:
    """The JSON object of ``POST /api/connect-sessions``; ``SessionInputError`` otherwise."""
    if len(body) > MAX_REQUEST_BODY:
        raise SessionTooLargeError("request_too_large", f"the request body must be at most {MAX_REQUEST_BODY} bytes")
    try:
        document = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise SessionInputError("invalid_json", "the request body must be UTF-8 JSON") from None
    except ValueError:
        raise SessionInputError("invalid_json", "the request body is not valid JSON") from None
    if not isinstance(document, dict):
        raise SessionInputError("invalid_json", "the request body must be a JSON object")
    return document


def _checked_return_url(services: Services, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise SessionInputError("invalid_return_url", "returnUrl must be a string")
    if not value or len(value) > MAX_RETURN_URL_LENGTH:
        raise SessionInputError("invalid_return_url", f"returnUrl must be 1-{MAX_RETURN_URL_LENGTH} characters")
    if any(ord(c) <= 32 or ord(c) == 127 for c in value):
        raise SessionInputError("invalid_return_url", "returnUrl must not contain spaces or control characters")
    parsed = urlparse(value)
    origin = origin_of(value)
    if origin is None:
        raise SessionInputError("invalid_return_url", "returnUrl must be an absolute https URL")
    if parsed.scheme.lower() == "http" and not is_loopback_host(value):
        raise SessionInputError("invalid_return_url", "returnUrl must be https (http only on a loopback host)")
    if "@" in parsed.netloc:
        raise SessionInputError("invalid_return_url", "returnUrl must not carry a user name or password")
    if parsed.fragment or value.endswith("#"):
        raise SessionInputError("invalid_return_url", "returnUrl must not have a fragment")
    if origin not in services.settings.allowed_return_origins:
        raise SessionInputError(
            "return_url_not_allowed", "returnUrl's origin is not one of ALLOWED_RETURN_ORIGINS"
        )
    return value


def _checked_login_hint(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise SessionInputError("invalid_login_hint", "loginHint must be a string")
    hint = value.strip()
    if len(hint) > MAX_LOGIN_HINT_LENGTH or any(ord(c) < 32 or ord(c) == 127 for c in hint):
        raise SessionInputError(
            "invalid_login_hint", f"loginHint must be at most {MAX_LOGIN_HINT_LENGTH} printable characters"
        )
    return hint or None


def connect_url(services: Services, session_id: str) -> str:
    return f"{services.settings.public_base_url}/api/connect?session={session_id}"


def create_session(services: Services, request: Mapping[str, Any]) -> dict[str, Any]:
    """A new pending session for ``request["ownerId"]``; the 201 body."""
    owner_id = checked_owner(request.get("ownerId"))
    return_url = _checked_return_url(services, request.get("returnUrl"))
    login_hint = _checked_login_hint(request.get("loginHint"))
    now = services.clock.now()
    session = ConnectSession(
        session_id="cs_" + secrets.token_urlsafe(32),
        owner_id=owner_id,
        expires_at=now + dt.timedelta(minutes=services.settings.connect_session_minutes),
        created_at=now,
        return_url=return_url,
        login_hint=login_hint,
    )
    services.connect_sessions.save(session)
    log.info("connect session created (owner %s)", owner_id)
    return {
        "sessionId": session.session_id,
        "connectUrl": connect_url(services, session.session_id),
        "expiresAt": _iso(session.expires_at),
    }


def session_status(session: ConnectSession, now: dt.datetime) -> ConnectSessionStatus:
    if session.status != ConnectSessionStatus.PENDING:
        return session.status
    # Opened in time, its sign-in may still be under way for the flow's own lifetime.
    deadline = session.expires_at if session.opened_at is None else session.opened_at + AUTH_FLOW_LIFETIME
    return ConnectSessionStatus.EXPIRED if now >= deadline else ConnectSessionStatus.PENDING


def show_session(services: Services, session_id: str) -> dict[str, Any]:
    if not SESSION_ID_PATTERN.fullmatch(session_id):
        raise SessionInputError("invalid_session_id", "not a connect session id")
    session = services.connect_sessions.get(session_id)
    if session is None:
        raise NotFoundError("no such connect session (unknown, or purged an hour after it expired)")
    view: dict[str, Any] = {
        "sessionId": session.session_id,
        "ownerId": session.owner_id,
        "status": session_status(session, services.clock.now()).value,
        "expiresAt": _iso(session.expires_at),
    }
    if session.account_id:
        view["accountId"] = session.account_id
    if session.error:
        view["error"] = session.error
    return view


# -- the browser ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionOpened:
    authorize_url: str
    browser_binding: str  # set as the cookie


class SessionRefusedError(AuthFlowError):
    """The connectUrl cannot be used (unknown, expired, already used); ``return_url`` is
    where the browser may be sent with ``status=failed`` (None: an error page)."""

    def __init__(self, message: str, *, error: str, session: ConnectSession | None = None) -> None:
        super().__init__(message, error=error)
        self.session = session


def open_session(services: Services, session_id: str, browser_binding: str | None) -> SessionOpened:
    """Claim the session for this browser and start its sign-in."""
    if not SESSION_ID_PATTERN.fullmatch(session_id):
        raise SessionRefusedError("this connect link is not valid", error="invalid_session")
    session = services.connect_sessions.get(session_id)
    if session is None:
        raise SessionRefusedError("this connect link is unknown or has expired", error="unknown_session")
    now = services.clock.now()
    if session.opened_at is not None or session.status != ConnectSessionStatus.PENDING:
        # Single use: a second open (another browser, or the same one again) is refused,
        # and the session is left as it is for the browser that opened it first.
        raise SessionRefusedError("this connect link was already used", error="session_used")
    if now >= session.expires_at:
        raise SessionRefusedError("this connect link has expired", error="session_expired", session=session)
    binding = browser_binding or new_browser_binding()
    session.opened_at = now
    try:
        services.connect_sessions.save(session)
    except ConcurrencyError:
        raise SessionRefusedError("this connect link was already used", error="session_used") from None
    try:
        url = start_connect(services, session.login_hint, browser_binding=binding, session_id=session.session_id)
    except ConnectorError:
        # The sign-in could not start (the identity platform or storage failed): the link
        # stays usable for another try.
        session.opened_at = None
        try:
            services.connect_sessions.save(session)
        except ConnectorError as exc:
            log.warning("connect session could not be reopened: %s", type(exc).__name__)
        raise
    log.info("connect session opened (owner %s)", session.owner_id)
    return SessionOpened(url, binding)


def open_anonymous(services: Services, login_hint: str | None, browser_binding: str | None) -> SessionOpened:
    """``/api/connect`` without a session, where ``ALLOW_ANONYMOUS_CONNECT`` allows it."""
    if not services.settings.allow_anonymous_connect:
        raise AnonymousConnectRefusedError(
            "connecting needs a connect link from the product you are using"
        )
    binding = browser_binding or new_browser_binding()
    return SessionOpened(start_connect(services, login_hint, browser_binding=binding), binding)


class AnonymousConnectRefusedError(ConnectorError):
    """``/api/connect`` without a session while ``ALLOW_ANONYMOUS_CONNECT`` is false."""


@dataclass(frozen=True)
class CallbackOutcome:
    """What the callback ended with: a connected account or the error, and the session."""

    result: ConnectResult | None
    error: ConnectorError | None
    session: ConnectSession | None

    def return_location(self) -> str | None:
        """Where to send the browser: the session's returnUrl with the outcome in its query."""
        session = self.session
        if session is None or not session.return_url:
            return None
        if self.result is not None:
            status = "reconnected" if self.result.reconnected else "connected"
            query = {"accountId": self.result.account.account_id, "sessionId": session.session_id, "status": status}
        else:
            query = {"sessionId": session.session_id, "status": "failed", "error": error_code(self.error)}
        separator = "&" if urlparse(session.return_url).query else "?"
        return f"{session.return_url}{separator}{urlencode(query)}"


def error_code(error: ConnectorError | None) -> str:
    if isinstance(error, AuthFlowError):
        return error.error[:100]
    return "connect_failed"


def complete_browser_connect(
    services: Services, response: Mapping[str, str], browser_binding: str | None
) -> CallbackOutcome:
    """The callback: raises ``AuthFlowError`` when the flow is not this browser's (nothing is
    connected and no session changes); otherwise the outcome, the session finished."""
    pending, fields = claim_callback(services, response, browser_binding=browser_binding)
    session = None
    if pending is not None and pending.session_id:
        session = services.connect_sessions.get(pending.session_id)
    try:
        if pending is not None and pending.session_id and session is None:
            raise AuthFlowError("this connect link has expired; please start again", error="session_expired")
        result = complete_claimed(
            services, pending, fields, owner_id=session.owner_id if session else None,
            reason="connect_session" if session else "browser",
        )
    except ConnectorError as exc:
        if session is not None:
            session = _finish_session(services, session, error=error_code(exc))
        return CallbackOutcome(None, exc, session)
    if session is not None:
        session = _finish_session(services, session, result=result)
    return CallbackOutcome(result, None, session)


def _finish_session(
    services: Services, session: ConnectSession, *, result: ConnectResult | None = None, error: str | None = None
) -> ConnectSession:
    for _ in range(5):
        if result is not None:
            session.status = ConnectSessionStatus.COMPLETED
            session.account_id = result.account.account_id
            session.reconnected = result.reconnected
            session.error = None
        else:
            session.status = ConnectSessionStatus.FAILED
            session.error = error
        try:
            return services.connect_sessions.save(session)
        except ConcurrencyError:
            fresh = services.connect_sessions.get(session.session_id)
            if fresh is None:
                return session
            session = fresh
        except ConnectorError as exc:
            log.warning("connect session could not be finished: %s", type(exc).__name__)
            return session
    return session


# -- keeping the tables bounded ------------------------------------------------------------


def purge_expired(services: Services) -> dict[str, int]:
    """Delete expired pending flows and sessions past their retention (the purge timer)."""
    counts = services.purger.purge_expired(services.clock.now())
    log.info("purge: %s", " ".join(f"{table}={count}" for table, count in sorted(counts.items())))
    return counts


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
