"""Upload ids: a Graph upload session's URL, sealed for the account that opened it.

A product uploads a file larger than one request may carry (the Functions host takes 100 MB
at most, `FUNCTIONS_REQUEST_BODY_SIZE_LIMIT`) in fragments through the files API
(shared/drive_files.py, "resumable uploads"). Graph's ``uploadUrl`` of the session is a
credential in itself: whoever holds it writes the file, with no token
(https://learn.microsoft.com/graph/api/driveitem-createuploadsession). The connector keeps
it as it keeps a file's download URL: the product gets an opaque upload id, the URL and the
account id encrypted and authenticated with AES-256-GCM under a key derived from
``CLIENT_STATE_KEY``. Nothing is stored per upload, so any instance takes any fragment; a
forged or altered id, or one given for another account, opens to nothing. After a key
rotation ids sealed under the previous key still open while ``CLIENT_STATE_KEY_PREVIOUS``
is set.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.errors import UnknownUploadError

VERSION = b"u1"
NONCE_BYTES = 12  # AES-GCM's standard nonce, random per id
# Graph's upload URLs run to a few hundred characters; an id is about 4/3 of URL + 60.
MAX_ID_CHARS = 4096


def _cipher(key: bytes) -> AESGCM:
    # A key of its own for this use, so an upload id says nothing about clientStates.
    return AESGCM(hmac.new(key, b"upload id key v1", hashlib.sha256).digest())


def seal(key: bytes, account_id: str, upload_url: str) -> str:
    """The upload id of ``upload_url`` for ``account_id``, under ``key``."""
    nonce = os.urandom(NONCE_BYTES)
    plain = json.dumps({"a": account_id, "u": upload_url}, separators=(",", ":")).encode("utf-8")
    sealed = _cipher(key).encrypt(nonce, plain, VERSION)
    return base64.urlsafe_b64encode(VERSION + nonce + sealed).decode("ascii").rstrip("=")


def open_upload_id(keys: Sequence[bytes], account_id: str, upload_id: str) -> str:
    """The upload URL an id of ``account_id`` stands for; ``UnknownUploadError`` otherwise."""
    if not upload_id or len(upload_id) > MAX_ID_CHARS:
        raise UnknownUploadError("no such upload session")
    try:
        raw = base64.urlsafe_b64decode(upload_id + "=" * (-len(upload_id) % 4))
    except (binascii.Error, ValueError):
        raise UnknownUploadError("no such upload session") from None
    version, nonce, sealed = raw[:2], raw[2:2 + NONCE_BYTES], raw[2 + NONCE_BYTES:]
    if version != VERSION or len(nonce) != NONCE_BYTES:
        raise UnknownUploadError("no such upload session")
    for key in keys:
        try:
            plain = _cipher(key).decrypt(nonce, sealed, VERSION)
        except InvalidTag:
            continue
        value = json.loads(plain)
        if value.get("a") == account_id and isinstance(value.get("u"), str):
            return str(value["u"])
        break
    raise UnknownUploadError("no such upload session")
