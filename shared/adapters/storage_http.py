"""The HTTP transport of the Storage SDK clients (tables, queues): one pooled session.

The SDK's default transport keeps a ``requests`` pool of 10 connections per host. The
renewal run calls Table Storage from 32 threads (RENEWAL_CONCURRENCY) plus the index
readers: with 10 pooled connections the rest are opened and closed per request ("Connection
pool is full, discarding connection"), which costs a TCP (and in Azure a TLS) handshake each.

``requests`` also re-reads the environment's proxy and CA variables on every request when
``trust_env`` is on (``Session.merge_environment_settings``): about 0.6 ms of CPU per call,
a fifth of a table read. Without proxy variables there is nothing to re-read: the CA
bundle is taken once and ``trust_env`` turned off. With proxy variables (and their
``NO_PROXY`` exceptions) requests keeps deciding per request, as before.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any
from urllib.request import getproxies_environment

if TYPE_CHECKING:
    from azure.core.pipeline.transport import RequestsTransport

# More than the renewal's threads plus the expiry index's readers (32 + 16 by default).
STORAGE_POOL_SIZE = 64


def pooled_transport(pool_size: int = STORAGE_POOL_SIZE) -> RequestsTransport:
    """A transport whose session keeps ``pool_size`` connections per host.

    The session outlives any one client (``session_owner=False``): clients made from one
    service client share it, and closing one of them does not close the pool.
    """
    import requests
    from azure.core.pipeline.transport import RequestsTransport
    from urllib3.util.retry import Retry

    session = requests.Session()
    if not getproxies_environment():
        session.trust_env = False
        session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    # Retries are the SDK's retry policy's, as with the SDK's own adapter.
    adapter = requests.adapters.HTTPAdapter(
        pool_connections=4,
        pool_maxsize=pool_size,
        max_retries=Retry(total=False, redirect=False, raise_on_status=False),
    )
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return RequestsTransport(session=session, session_owner=False)


def storage_service_client(client_class: Any, connection: str, service: str) -> Any:
    """A Storage SDK service client (``TableServiceClient``, ``QueueServiceClient``) for
    ``connection``: a connection string, or ``identity:<account>`` in Azure, where the app
    reaches storage with its managed identity (``AzureWebJobsStorage__accountName``)."""
    if connection.startswith("identity:"):
        from azure.identity import DefaultAzureCredential

        account = connection.removeprefix("identity:")
        return client_class(
            f"https://{account}.{service}.core.windows.net",
            credential=DefaultAzureCredential(),
            transport=pooled_transport(),
        )
    return client_class.from_connection_string(connection, transport=pooled_transport())
