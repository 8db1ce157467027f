"""The browser binding: a random value in a cookie, its digest stored with the sign-in flow.

The callback completes a sign-in only in the browser that started it (the cookie's value
matches the digest stored with the pending flow, compared in constant time), so a link to
a half-finished sign-in cannot be completed by someone else's browser.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from http.cookies import CookieError, SimpleCookie

BINDING_COOKIE = "m365c_binding"
_BINDING_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")


def new_browser_binding() -> str:
    return secrets.token_urlsafe(32)


def binding_digest(binding: str) -> str:
    return hashlib.sha256(binding.encode("ascii")).hexdigest()


def binding_matches(stored_digest: str, presented: str | None) -> bool:
    if not stored_digest or not presented or not _BINDING_PATTERN.fullmatch(presented):
        return False
    return hmac.compare_digest(stored_digest, binding_digest(presented))


def read_browser_binding(cookie_header: str | None) -> str | None:
    """The binding cookie's value from a ``Cookie`` header, when it has the right shape."""
    if not cookie_header:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(cookie_header)
    except CookieError:
        return None
    morsel = jar.get(BINDING_COOKIE)
    value = morsel.value if morsel is not None else None
    return value if value and _BINDING_PATTERN.fullmatch(value) else None
