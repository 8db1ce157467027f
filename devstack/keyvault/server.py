"""HTTPS front of the Key Vault emulator: the secrets REST API that ``SecretClient`` calls.

Wire behaviour follows Key Vault (https://learn.microsoft.com/rest/api/keyvault/secrets and
https://learn.microsoft.com/azure/key-vault/general/authentication-requests-and-responses):

- Challenge authentication. A request without ``Authorization: Bearer <token>`` gets 401
  with ``WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/<tenant>",
  resource="https://vault.azure.net"``. azure-keyvault's challenge policy reads
  ``authorization`` (or ``authorization_uri``) for the tenant and ``scope``, else
  ``resource`` + ``/.default``, for the token's scope; the emulator sends the ``resource``
  form, as Key Vault does. Its first request of a client comes without a body
  (``Content-Length: 0``), so authentication is checked before the body is.
- Any well-formed bearer token is accepted: the emulator does not validate signatures,
  audiences or expiry. It is a local stand-in, never a security boundary; it listens on
  loopback by default.
- Every request needs an ``api-version`` query parameter; any value is accepted
  (azure-keyvault-secrets 4.12 sends ``2026-04-01``).
- Errors are Key Vault's document ``{"error": {"code", "message", "innererror"?}}``.

Only methods, paths and status codes are logged: never a body, a token or a value.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from devstack.certs import DEFAULT_CERT_DIR, server_ssl_context
from devstack.keyvault.store import (
    RECOVERY_LEVEL,
    Json,
    Secret,
    SecretVault,
    SecretVersion,
    VaultError,
    validate_name,
)

log = logging.getLogger("devstack.keyvault")

DEFAULT_TENANT_ID = "00000000-0000-4000-8000-00000000beef"
AUTHORITY_HOST = "https://login.microsoftonline.com"
RESOURCE = "https://vault.azure.net"
DEFAULT_PAGE_SIZE = 25
MAX_BODY_BYTES = 256 * 1024
MAX_DRAINED_BYTES = 8 * 1024 * 1024
_BEARER = re.compile(r"^Bearer\s+([A-Za-z0-9\-._~+/]+=*)\s*$")


# -- JSON documents of the REST API ------------------------------------------------------
def _attributes(secret: Secret, version: SecretVersion, retention_days: int) -> Json:
    attributes: Json = {"enabled": version.enabled}
    if version.nbf is not None:
        attributes["nbf"] = version.nbf
    if version.exp is not None:
        attributes["exp"] = version.exp
    attributes.update(
        created=version.created,
        updated=version.updated,
        recoveryLevel=RECOVERY_LEVEL,
        recoverableDays=retention_days,
    )
    return attributes


def _properties(base: str, secret: Secret, version: SecretVersion, retention_days: int, *, versioned: bool) -> Json:
    document: Json = {
        "id": f"{base}/secrets/{secret.name}/{version.version}" if versioned else f"{base}/secrets/{secret.name}",
        "attributes": _attributes(secret, version, retention_days),
    }
    if version.content_type is not None:
        document["contentType"] = version.content_type
    if version.tags is not None:
        document["tags"] = version.tags
    return document


def _bundle(base: str, secret: Secret, version: SecretVersion, retention_days: int, *, with_value: bool) -> Json:
    document = _properties(base, secret, version, retention_days, versioned=True)
    if with_value:
        document = {"value": version.value, **document}
    return document


def _deleted(base: str, secret: Secret, retention_days: int, *, item: bool) -> Json:
    document = _properties(base, secret, secret.latest, retention_days, versioned=not item)
    document.update(
        recoveryId=f"{base}/deletedsecrets/{secret.name}",
        scheduledPurgeDate=secret.scheduled_purge_date,
        deletedDate=secret.deleted_date,
    )
    return document


def _page(items: list[Json], keys: list[str], query: dict[str, str], link: str) -> Json:
    """One page of a collection, ordered by ``keys``, continued by ``$skiptoken``."""
    raw_size = query.get("maxresults")
    size = DEFAULT_PAGE_SIZE
    if raw_size is not None:
        try:
            size = int(raw_size)
        except ValueError:
            size = 0
        if not 1 <= size <= DEFAULT_PAGE_SIZE:
            raise VaultError(400, "BadParameter", "maxresults must be a whole number from 1 to 25.")
    start = 0
    token = query.get("$skiptoken")
    if token:
        try:
            after = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise VaultError(400, "BadParameter", "The $skiptoken is not valid.") from None
        start = next((i for i, key in enumerate(keys) if key > after), len(keys))
    chunk = items[start : start + size]
    next_link = None
    if start + size < len(items):
        token = base64.urlsafe_b64encode(keys[start + size - 1].encode("utf-8")).decode("ascii").rstrip("=")
        api_version = quote(query.get("api-version", ""), safe="")
        next_link = f"{link}?api-version={api_version}&$skiptoken={token}&maxresults={size}"
    return {"value": chunk, "nextLink": next_link}


# -- HTTP --------------------------------------------------------------------------------
class _VaultHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], emulator: KeyVaultEmulator) -> None:
        self.emulator = emulator
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _VaultRequestHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # TLS handshakes that fail (a client without the CA) and dropped connections are
        # the client's business; anything else is a defect worth a traceback.
        log.debug("connection from %s ended with an error", client_address, exc_info=True)

    def close_connections(self) -> None:
        with self.connections_lock:
            connections = list(self.connections)
            self.connections.clear()
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _VaultHTTPServer6(_VaultHTTPServer):
    address_family = socket.AF_INET6


class _VaultRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "devstack-keyvault/1"
    sys_version = ""
    timeout = 60  # idle keep-alive connections are closed after a minute
    server: _VaultHTTPServer

    # TLS is negotiated here, in the connection's own thread, so a slow handshake never
    # holds up the accept loop.
    def setup(self) -> None:
        self.request.settimeout(self.timeout)
        # Headers and body go out in two writes; without TCP_NODELAY the second waits for
        # the client's delayed ACK (Nagle), some 40 ms per response on loopback.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.request = self.server.emulator.ssl_context.wrap_socket(self.request, server_side=True)
        with self.server.connections_lock:
            self.server.connections.add(self.request)
        super().setup()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.connections_lock:
                self.server.connections.discard(self.request)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s " + format, self.address_string(), *args)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # The request line holds the method and the path (secret names, never values).
        log.info("%s %s -> %s", self.command, urlsplit(self.path).path, code)

    # Every method goes through one dispatcher.
    def do_GET(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _send(self, status: int, document: Json | None = None, headers: dict[str, str] | None = None) -> None:
        body = b"" if document is None else json.dumps(document).encode("utf-8")
        self.send_response(status)
        if document is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-ms-keyvault-service-version", "devstack")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _send_error(self, error: VaultError, headers: dict[str, str] | None = None) -> None:
        self._send(error.status, error.document(), headers)

    def _read_body(self) -> bytes | None:
        length_header = self.headers.get("Content-Length", "0") or "0"
        try:
            length = int(length_header)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            self._send_error(VaultError(400, "BadParameter", "Invalid Content-Length."))
            return None
        if length > MAX_BODY_BYTES:
            # Read and dropped (so the client sees the answer rather than a reset), then
            # the connection is closed; a body beyond any reason is not even read.
            self.close_connection = True
            if length <= MAX_DRAINED_BYTES:
                while length > 0:
                    chunk = self.rfile.read(min(length, 65536))
                    if not chunk:
                        break
                    length -= len(chunk)
            self._send_error(
                VaultError(413, "RequestEntityTooLarge", f"The request body is over {MAX_BODY_BYTES} bytes.")
            )
            return None
        return self.rfile.read(length) if length else b""

    def _authorized(self) -> bool:
        return bool(_BEARER.match(self.headers.get("Authorization", "")))

    def _dispatch(self) -> None:
        body = self._read_body()
        if body is None:
            return
        emulator = self.server.emulator
        if not self._authorized():
            challenge = f'Bearer authorization="{AUTHORITY_HOST}/{emulator.tenant_id}", resource="{RESOURCE}"'
            self._send_error(
                VaultError(401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token."),
                {"WWW-Authenticate": challenge},
            )
            return
        parts = urlsplit(self.path)
        query = {key: values[0] for key, values in parse_qs(parts.query, keep_blank_values=True).items()}
        try:
            if "api-version" not in query:
                raise VaultError(400, "BadParameter", "The 'api-version' query parameter is missing.")
            segments = [unquote(s) for s in parts.path.split("/")[1:]]
            status, document = self._route(self.command, segments, query, body)
        except VaultError as error:
            self._send_error(error)
            return
        except Exception:  # noqa: BLE001 - a defect answers 500 like the service, not a dropped connection
            log.exception("%s %s failed", self.command, parts.path)
            self._send_error(VaultError(500, "InternalServerError", "The emulator failed on this request."))
            return
        self._send(status, document)

    def _route(self, method: str, segments: list[str], query: dict[str, str], body: bytes) -> tuple[int, Json | None]:
        emulator = self.server.emulator
        vault, base, days = emulator.vault, emulator.url, emulator.vault.retention_days
        collection, rest = (segments[0], segments[1:]) if segments else ("", [])
        # "/secrets/{name}/" (an empty version) addresses the latest version, as in Key Vault.
        if rest and rest[-1] == "" and len(rest) == 2:
            rest = rest[:1]

        if collection == "secrets":
            if not rest and method == "GET":
                pairs = vault.list_secrets()
                return 200, _page(
                    [_properties(base, s, v, days, versioned=False) for s, v in pairs],
                    [s.name.lower() for s, _ in pairs],
                    query,
                    f"{base}/secrets",
                )
            if len(rest) == 1:
                name = rest[0]
                if method == "PUT":
                    secret, version = vault.set(name, self._json(body))
                    return 200, _bundle(base, secret, version, days, with_value=True)
                if method == "GET":
                    secret, version = vault.get(name)
                    self._check_enabled(version)
                    return 200, _bundle(base, secret, version, days, with_value=True)
                if method == "PATCH":
                    secret, version = vault.update(name, "", self._json(body))
                    return 200, _bundle(base, secret, version, days, with_value=False)
                if method == "DELETE":
                    return 200, _deleted(base, vault.delete(name), days, item=False)
            if len(rest) == 2:
                name, version_id = rest
                if version_id == "versions" and method == "GET":
                    pairs = vault.list_versions(name)
                    return 200, _page(
                        [_properties(base, s, v, days, versioned=True) for s, v in pairs],
                        # Versions only ever append, so their position is a stable page key.
                        [f"{i:08d}" for i in range(len(pairs))],
                        query,
                        f"{base}/secrets/{pairs[0][0].name}/versions",
                    )
                if version_id in ("backup", "restore"):
                    raise VaultError(501, "NotImplemented", "Backup and restore are not offered by the emulator.")
                if method == "GET":
                    secret, version = vault.get(name, version_id)
                    self._check_enabled(version)
                    return 200, _bundle(base, secret, version, days, with_value=True)
                if method == "PATCH":
                    secret, version = vault.update(name, version_id, self._json(body))
                    return 200, _bundle(base, secret, version, days, with_value=False)
        elif collection == "deletedsecrets":
            if not rest and method == "GET":
                deleted = vault.list_deleted()
                return 200, _page(
                    [_deleted(base, s, days, item=True) for s in deleted],
                    [s.name.lower() for s in deleted],
                    query,
                    f"{base}/deletedsecrets",
                )
            if len(rest) == 1:
                if method == "GET":
                    return 200, _deleted(base, vault.get_deleted(rest[0]), days, item=False)
                if method == "DELETE":
                    vault.purge(rest[0])
                    return 204, None
            if len(rest) == 2 and rest[1] == "recover" and method == "POST":
                secret, version = vault.recover(rest[0])
                return 200, _bundle(base, secret, version, days, with_value=False)
        if rest:
            validate_name(rest[0])
        raise VaultError(404, "NotFound", f"No such operation: {method} /{'/'.join(segments)}")

    @staticmethod
    def _json(body: bytes) -> Json:
        try:
            document = json.loads(body or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise VaultError(400, "BadParameter", "The request body is not valid JSON.") from None
        if not isinstance(document, dict):
            raise VaultError(400, "BadParameter", "The request body must be a JSON object.")
        return document

    @staticmethod
    def _check_enabled(version: SecretVersion) -> None:
        if not version.enabled:
            raise VaultError(403, "Forbidden", "Operation get is not allowed on a disabled secret.", "SecretDisabled")


class KeyVaultEmulator:
    """The Key Vault emulator on ``https://host:port`` (``port=0``: a free port).

    ``data_file``: where secrets are kept across restarts (in memory when None).
    ``cert_dir``: the devstack CA directory; ``ca_file`` is what clients must trust.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        data_file: str | Path | None = None,
        cert_dir: str | Path = DEFAULT_CERT_DIR,
        *,
        tenant_id: str = DEFAULT_TENANT_ID,
        retention_days: int = 90,
    ) -> None:
        self.host = host
        self.port = port
        self.tenant_id = tenant_id
        self.cert_dir = Path(cert_dir)
        self.vault = SecretVault(None if data_file is None else Path(data_file), retention_days=retention_days)
        self.ssl_context: ssl.SSLContext = server_ssl_context("keyvault", self.cert_dir)
        self._server: _VaultHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self.cert_dir / "ca.pem"

    def start(self) -> KeyVaultEmulator:
        if self._server is not None:
            return self
        server_class = _VaultHTTPServer6 if ":" in self.host else _VaultHTTPServer
        self._server = server_class((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="keyvault-emulator", daemon=True
        )
        self._thread.start()
        log.info("Key Vault emulator listening on %s", self.url)
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        # Keep-alive connections would otherwise go on being served by their threads.
        server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> KeyVaultEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
