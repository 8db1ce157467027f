"""clientState: proof that a notification comes from a subscription we created.

Graph echoes the ``clientState`` we gave at subscription creation on every notification
(docs/graph-notes.md "Change notifications"). Ours is ``v1.{account_id}.{nonce}.{mac}`` with
``mac = HMAC-SHA256(CLIENT_STATE_KEY, "v1|{account_id}|{nonce}")`` truncated to 128 bits,
so the webhook verifies it in constant time without a storage read, and the account it
belongs to travels with it (lifecycle notifications carry no resource). It stays well
under Graph's 128 characters. The account id is not a secret; the key is.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

_VERSION = "v1"
_MAC_BYTES = 16
MAX_LENGTH = 128


def _mac(key: bytes, account_id: str, nonce: str) -> str:
    digest = hmac.new(key, f"{_VERSION}|{account_id}|{nonce}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:_MAC_BYTES]).rstrip(b"=").decode("ascii")


def issue_client_state(key: bytes, account_id: str) -> str:
    nonce = secrets.token_urlsafe(9)
    return f"{_VERSION}.{account_id}.{nonce}.{_mac(key, account_id, nonce)}"


def verify_client_state(key: bytes, client_state: object) -> str | None:
    """The account id the clientState was issued for, or None when it is not ours."""
    if not isinstance(client_state, str) or len(client_state) > MAX_LENGTH:
        return None
    version, _, rest = client_state.partition(".")
    account_id, _, tail = rest.rpartition(".")  # account ids contain a dot themselves
    account_id, _, nonce = account_id.rpartition(".")
    if version != _VERSION or not account_id or not nonce:
        return None
    expected = _mac(key, account_id, nonce)
    if not hmac.compare_digest(expected.encode(), tail.encode("utf-8", "replace")):
        return None
    return account_id
