"""RS256 JSON Web Tokens for the simulated identity platform (RFC 7515, RFC 7519).

The simulator signs id tokens and access tokens with one RSA key per process and
publishes it as a JWKS (RFC 7517) at ``/{tenant}/discovery/v2.0/keys``, as the Microsoft
identity platform does. Graph requests are verified against the same key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa


class TokenInvalid(Exception):
    """The token is malformed, not signed by our key, or uses another algorithm."""


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _int_to_b64url(value: int) -> str:
    return b64url_encode(value.to_bytes((value.bit_length() + 7) // 8, "big"))


class SigningKey:
    """One RSA-2048 signing key with a stable ``kid``."""

    def __init__(self) -> None:
        self._private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._public = self._private.public_key()
        numbers = self._public.public_numbers()
        self.kid = b64url_encode(hashlib.sha256(_int_to_b64url(numbers.n).encode()).digest()[:20])
        self._jwk = {
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.kid,
            "n": _int_to_b64url(numbers.n),
            "e": _int_to_b64url(numbers.e),
            "alg": "RS256",
        }

    def jwks(self) -> dict[str, Any]:
        return {"keys": [dict(self._jwk)]}

    def sign(self, claims: dict[str, Any]) -> str:
        header = {"typ": "JWT", "alg": "RS256", "kid": self.kid, "x5t": self.kid}
        signing_input = (
            b64url_encode(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + b64url_encode(json.dumps(claims, separators=(",", ":")).encode())
        )
        signature = self._private.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + b64url_encode(signature)

    def verify(self, token: str) -> dict[str, Any]:
        """Return the claims of ``token`` when its RS256 signature is ours; no claim checks."""
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenInvalid("not a JWS compact serialization")
        try:
            header = json.loads(b64url_decode(parts[0]))
            claims = json.loads(b64url_decode(parts[1]))
            signature = b64url_decode(parts[2])
        except (ValueError, UnicodeDecodeError) as exc:
            raise TokenInvalid("undecodable token") from exc
        if not isinstance(header, dict) or header.get("alg") != "RS256" or header.get("kid") != self.kid:
            raise TokenInvalid("unexpected algorithm or key id")
        try:
            self._public.verify(
                signature, (parts[0] + "." + parts[1]).encode("ascii"), padding.PKCS1v15(), hashes.SHA256()
            )
        except InvalidSignature as exc:
            raise TokenInvalid("signature does not verify") from exc
        if not isinstance(claims, dict):
            raise TokenInvalid("claims are not an object")
        return claims


def new_token_id() -> str:
    return b64url_encode(secrets.token_bytes(16))
