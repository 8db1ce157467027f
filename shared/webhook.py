"""Graph webhook input: the validation handshake (and, later, change-notification batches).

Handshake (GRAPH_NOTES "Validation handshake"): Graph POSTs ``?validationToken=…`` and
expects 200, text/plain, the URL-decoded token as the body, within 10 seconds. The query
string is already URL-decoded by the host. The token is echoed as plain text only, never
as HTML, and only when it is of a sane length.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_VALIDATION_TOKEN_LENGTH = 1024


@dataclass(frozen=True)
class WebhookAnswer:
    status: int
    body: str


def validation_response(token: str) -> WebhookAnswer:
    if not token or len(token) > MAX_VALIDATION_TOKEN_LENGTH:
        return WebhookAnswer(400, "validationToken must be 1 to 1024 characters long")
    if any(ord(ch) < 32 and ch not in "\t" for ch in token):
        return WebhookAnswer(400, "validationToken must not contain control characters")
    return WebhookAnswer(200, token)
