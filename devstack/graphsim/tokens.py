"""Access tokens and id tokens of the simulated identity platform, signed with the simulator's key.

Claims follow Entra ID's v1.0 access tokens for Graph (``aud``, ``scp`` or ``roles``,
``oid``, ``tid``, ``appid``, ``idtyp``) and v2.0 id tokens (pairwise ``sub``).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Any

from .context import SimContext
from .jwt import b64url_encode, new_token_id
from .oauth import (
    GRAPH_AUDIENCE,
)
from .state import (
    App,
    User,
)

APPLICATION_ROLES = ["Mail.Read", "Mail.ReadWrite", "User.Read.All"]


class TokenIssuer:
    def __init__(self, ctx: SimContext) -> None:
        self.sim = ctx
        self.state = ctx.state

    def _pairwise_sub(self, user: User, client_id: str) -> str:
        return b64url_encode(hashlib.sha256(f"{user.id}|{client_id}".encode()).digest()[:24])

    def access_token(
        self, app: App, user: User | None, scopes: list[str], confidential: bool, lifetime: int | None = None
    ) -> str:
        now = int(time.time())
        if lifetime is None:
            lifetime = self.state.settings.access_token_lifetime_seconds
        claims: dict[str, Any] = {
            "aud": GRAPH_AUDIENCE,
            "iss": f"https://sts.windows.net/{app.tenant_id if user is None else user.tenant_id}/",
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "app_displayname": app.display_name,
            "appid": app.client_id,
            "appidacr": "1" if confidential else "0",
            "uti": new_token_id(),
            "ver": "1.0",
        }
        if user is None:
            sp_oid = str(uuid.uuid5(uuid.NAMESPACE_URL, "sp:" + app.client_id))
            claims.update({"idtyp": "app", "oid": sp_oid, "sub": sp_oid, "tid": app.tenant_id,
                           "roles": list(APPLICATION_ROLES)})
        else:
            claims.update({
                "idtyp": "user",
                "name": user.display_name,
                "oid": user.id,
                "scp": " ".join(scopes + ["openid", "profile", "email"]),
                "sub": self._pairwise_sub(user, app.client_id),
                "tid": user.tenant_id,
                "unique_name": user.user_principal_name,
                "upn": user.user_principal_name,
            })
        return self.sim.key.sign(claims)

    def id_token(self, app: App, user: User, nonce: str | None) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "aud": app.client_id,
            "iss": f"{self.sim.base_url}/{user.tenant_id}/v2.0",
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "name": user.display_name,
            "oid": user.id,
            "preferred_username": user.user_principal_name,
            "rh": "0.AAAA" + new_token_id(),
            "sid": str(uuid.uuid5(uuid.NAMESPACE_URL, "sid:" + user.id)),
            "sub": self._pairwise_sub(user, app.client_id),
            "tid": user.tenant_id,
            "uti": new_token_id(),
            "ver": "2.0",
        }
        if nonce:
            claims["nonce"] = nonce
        return self.sim.key.sign(claims)

