"""Microsoft identity platform + Microsoft Graph simulator for the devstack.

Start it in process::

    from devstack.graphsim import GraphSimulator
    with GraphSimulator(host="127.0.0.1", port=0, cert_dir=None) as sim:
        sim.base_url      # https://127.0.0.1:<port>  -> MICROSOFT_AUTHORITY_HOST
        sim.graph_url     # https://127.0.0.1:<port>/v1.0 -> GRAPH_API_ENDPOINT
        sim.ca_file       # the devstack CA clients must trust (verify= / REQUESTS_CA_BUNDLE)

or alone with ``python -m devstack.graphsim`` (GRAPHSIM_HOST, GRAPHSIM_PORT=8444).

Control API (no auth, loopback), under ``{base_url}/_sim``:
``POST|GET /apps``, ``GET|PUT /settings``, ``POST|GET /users``, ``GET /users/{id|upn}``,
``POST /users/{u}/messages``, ``GET|PATCH|DELETE /users/{u}/messages/{id}``,
``POST /users/{u}/revoke``, ``POST /users/{u}/delta/reset``, ``GET /subscriptions``,
``GET|DELETE /subscriptions/{id}``, ``POST /subscriptions/{id}/lifecycle``,
``GET|PUT|DELETE /faults``, ``GET|DELETE /deliveries``, ``GET /health``,
``POST /bulk`` (many users, their subscriptions and access tokens in one call; see ``control``),
``/users/{u}/drive/...`` (seeding files and folders, the user's own edits and renames, upload
sessions; see ``drive_control``).

Pre-authenticated file transfer URLs of drives (upload sessions, downloads) live under
``{base_url}/_files`` (``uploads``).
"""

from __future__ import annotations

from .server import GraphSimulator
from .state import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_REDIRECT_URI,
    DEFAULT_TENANT_ID,
    DEFAULT_USERS,
)

__all__ = [
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "DEFAULT_REDIRECT_URI",
    "DEFAULT_TENANT_ID",
    "DEFAULT_USERS",
    "GraphSimulator",
]
