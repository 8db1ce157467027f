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
``POST|GET /users/{u}/messages``, ``GET|PATCH|DELETE /users/{u}/messages/{id}``,
``POST /users/{u}/revoke``, ``POST /users/{u}/delta/reset``, ``GET /subscriptions``,
``GET|DELETE /subscriptions/{id}``, ``POST /subscriptions/{id}/lifecycle``,
``GET|PUT|DELETE /faults``, ``GET|DELETE /deliveries``, ``GET|DELETE /requests`` (the
Graph requests served, ``$batch`` inner requests included), ``GET /health``,
``POST /bulk`` (many users, their subscriptions and access tokens in one call; see ``seeding``),
``/users/{u}/drive/...`` (seeding files and folders, the user's own edits and renames, upload
sessions; see ``drive_control``).

Modules: ``server`` (listener, :class:`GraphSimulator`) hands one ``context.SimContext``
to the surfaces: ``identity`` (+ ``oauth``, ``tokens``, ``signin``), ``graph`` (front
door: authentication, throttling, faults, request log) with its areas ``graph_folders``,
``graph_mail``, ``graph_delta``, ``graph_batch``, ``graph_subscriptions``, and
``control`` (+ ``seeding``). Mailbox data lives in ``mailstore``, its changes in
``mailbox``, delivery of notifications in ``delivery``. Drives: ``drive`` (the Graph area)
with ``drive_store`` (items, versions, change log), ``drive_render``, ``drive_delta``,
``drive_notify`` (subscriptions, coalesced notifications), ``uploads`` (upload sessions and
download URLs, served under ``{base_url}/_files`` without a bearer token) and
``drive_control``. A new Graph area registers its
handler in ``GraphApi.areas`` (under ``/me`` and ``/users/{id}``).
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
