"""clientState: proof that a notification comes from a subscription we created.

Graph echoes the ``clientState`` we gave at subscription creation on every notification
(docs/graph-notes.md "Change notifications"). Ours is

    v2.{key_id}.{account_id}.{nonce}.{mac}
    mac = HMAC-SHA256(key, "v2|{key_id}|{account_id}|{nonce}"), truncated to 128 bits

so the webhook verifies it in constant time without a storage read, and the account it
belongs to travels with it (lifecycle notifications carry no resource). The nonce is new
for every subscription and kept with the subscription's record: processing compares it,
so a clientState that leaked stops being worth anything once its subscription is gone.
``key_id`` names the key that signed it (a hash of the key, not the key), so that
``CLIENT_STATE_KEY`` can rotate: the webhook accepts the current key and
``CLIENT_STATE_KEY_PREVIOUS``. A clientState stays well under Graph's 128 characters
(about 120 with an ``{oid}.{tid}`` account id). The account id is not a secret; the key is.

Subscriptions created before the key id existed carry ``v1.{account_id}.{nonce}.{mac}``
(``mac`` over ``"v1|{account_id}|{nonce}"``); those are still accepted under either key.

Anything else, including a string that is not printable ASCII, is not ours: the verifier
answers None and never raises, whatever a caller sends.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

VERSION = "v2"
LEGACY_VERSION = "v1"
_MAC_BYTES = 16
KEY_ID_LENGTH = 6
MAX_LENGTH = 128
# Every part is base64url or an account id ({oid}.{tid}: hex, dashes, dots). Checked
# before anything is encoded: a lone surrogate or any non-ASCII character ends here.
_SHAPE = re.compile(r"[A-Za-z0-9._-]+", re.ASCII)


@dataclass(frozen=True)
class ClientStateClaim:
    """What a verified clientState says: whose it is, which subscription's nonce, which key."""

    account_id: str
    nonce: str
    key_id: str | None  # None: a legacy v1 clientState, signed before keys had ids


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@functools.lru_cache(maxsize=8)
def key_id(key: bytes) -> str:
    """A short public name for ``key``: an HMAC of a constant under it, so it reveals nothing."""
    return _b64(hmac.new(key, b"clientState key id", hashlib.sha256).digest())[:KEY_ID_LENGTH]


def _mac(key: bytes, message: str) -> str:
    return _b64(hmac.new(key, message.encode("ascii"), hashlib.sha256).digest()[:_MAC_BYTES])


def new_nonce() -> str:
    return secrets.token_urlsafe(9)


def issue_client_state(key: bytes, account_id: str, nonce: str | None = None) -> str:
    """The clientState of a new subscription of ``account_id``, signed with ``key``."""
    nonce = new_nonce() if nonce is None else nonce
    kid = key_id(key)
    value = f"{VERSION}.{kid}.{account_id}.{nonce}.{_mac(key, f'{VERSION}|{kid}|{account_id}|{nonce}')}"
    if len(value) > MAX_LENGTH or not _SHAPE.fullmatch(value):
        raise ValueError("account id does not fit in a clientState")
    return value


def read_client_state(keys: bytes | Sequence[bytes], client_state: object) -> ClientStateClaim | None:
    """What ``client_state`` says when one of ``keys`` signed it; None when it is not ours."""
    if not isinstance(client_state, str) or len(client_state) > MAX_LENGTH:
        return None
    if not _SHAPE.fullmatch(client_state):
        return None
    candidates = (keys,) if isinstance(keys, bytes) else tuple(keys)
    version, _, rest = client_state.partition(".")
    if version == VERSION:
        kid, _, rest = rest.partition(".")
        signers = [k for k in candidates if hmac.compare_digest(key_id(k), kid)]
    elif version == LEGACY_VERSION:
        kid, signers = "", list(candidates)
    else:
        return None
    head, _, tail = rest.rpartition(".")
    account_id, _, nonce = head.rpartition(".")  # account ids contain a dot themselves
    if not account_id or not nonce or not tail:
        return None
    signed = f"{VERSION}|{kid}|{account_id}|{nonce}" if kid else f"{LEGACY_VERSION}|{account_id}|{nonce}"
    for key in signers:
        if hmac.compare_digest(_mac(key, signed), tail):
            return ClientStateClaim(account_id, nonce, kid or None)
    return None


def verify_client_state(keys: bytes | Sequence[bytes], client_state: object) -> str | None:
    """The account id the clientState was issued for, or None when it is not ours."""
    claim = read_client_state(keys, client_state)
    return None if claim is None else claim.account_id
