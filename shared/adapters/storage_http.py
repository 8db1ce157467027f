"""The HTTP transport of the Storage SDK clients (tables, queues): one pool shared by them.

The SDK's default transport keeps a ``requests`` pool of 10 connections per host. The
renewal run calls Table Storage from 32 threads (RENEWAL_CONCURRENCY) plus the index
readers: with 10 pooled connections the rest are opened and closed per request ("Connection
pool is full, discarding connection"), which costs a TCP (and in Azure a TLS) handshake each.
Both transports here keep ``STORAGE_POOL_SIZE`` connections per host.

Without proxy variables the transport is ``HttpClientTransport`` (http_transport.py), on
the standard library's ``http.client``: 0.9-1.5 ms of CPU per table call against 1.7-2.3 ms
through ``requests``. It reads the CA bundle from the environment once and has no proxy
support, so with proxy variables (and their ``NO_PROXY`` exceptions) the transport is
``requests``', which decides per request from the environment, as the SDK's own does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.request import getproxies_environment

from shared.adapters.http_transport import HttpClientTransport

if TYPE_CHECKING:
    from azure.core.pipeline.transport import HttpTransport

# More than the renewal's threads plus the expiry index's readers (32 + 16 by default).
STORAGE_POOL_SIZE = 64


def pooled_transport(pool_size: int = STORAGE_POOL_SIZE) -> HttpTransport:  # type: ignore[type-arg]
    """A transport that keeps ``pool_size`` connections per host, for one service client
    and every client made from it.

    Closing one of those clients does not close the pool (``session_owner=False`` for
    ``requests``; ``HttpClientTransport`` leaves it open on ``__exit__``).
    """
    if not getproxies_environment():
        return HttpClientTransport(pool_size=pool_size)

    import requests
    from azure.core.pipeline.transport import RequestsTransport
    from urllib3.util.retry import Retry

    session = requests.Session()
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
