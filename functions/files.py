"""The files API (function key): a connected account's OneDrive.

    GET    /api/accounts/{id}/drive/items/{itemId}              the item (``webUrl`` opens it for editing)
    GET    /api/accounts/{id}/drive/root:/{path}:               the item at a path
    GET    /api/accounts/{id}/drive/items/{itemId}/children     a page of a folder (``?size=``, ``continuation``)
    PUT    /api/accounts/{id}/drive/root:/{path}:/content       upload (``?conflict=replace|rename|fail``)
    POST   /api/accounts/{id}/drive/root:/{path}:/createUploadSession  a resumable upload -> ``uploadId``
    PUT    /api/accounts/{id}/drive/uploads/{uploadId}          one fragment (``Content-Range``): 202, then the item
    GET    /api/accounts/{id}/drive/uploads/{uploadId}          ``nextExpectedRanges``
    DELETE /api/accounts/{id}/drive/uploads/{uploadId}          cancel the upload, 204
    GET    /api/accounts/{id}/drive/items/{itemId}/content      the bytes, streamed (``Range`` honoured)
    POST   /api/accounts/{id}/drive/items/{itemId}/createLink   ``{"type", "scope"}`` -> a sharing link
    DELETE /api/accounts/{id}/drive/items/{itemId}              204

The by-path routes are one catch-all route, ``drive/root:/{*path}``: a catch-all parameter
takes the rest of the path, slashes included, and must be the last segment of an ASP.NET
Core route template, so the ``:`` and ``:/content`` that end Graph's path syntax are read
here (and ``:/createUploadSession``). Errors are ``{"error": {"code", "message"}}``; the status is
``functions.api_errors.status_for``'s, the body's code is chosen in ``_failure``.

A download is answered with a ``StreamingResponse`` (HTTP streams, functions/http.py): its
chunks go from Graph's download URL to the caller as they arrive, with Graph's
``Content-Length``, so a file of any size passes through in constant memory and a transfer
that breaks off shows short to the caller. An error found before the first byte (no such
item, no scope, a bad ``Range``) is still a JSON error.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import azure.functions as func
from azurefunctions.extensions.http.fastapi import StreamingResponse

from functions.api_errors import status_for
from functions.http import secured
from shared import bootstrap, drive_files, drive_uploads
from shared.errors import (
    ConflictError,
    ConnectorError,
    GraphError,
    InvalidInputError,
    InvalidPathError,
    MissingScopeError,
    NotFoundError,
    PayloadTooLargeError,
    ReauthRequiredError,
    ThrottledError,
    UnknownAccountError,
    UnknownUploadError,
)

bp = func.Blueprint()
log = logging.getLogger(__name__)

ITEM_ROUTE = "accounts/{account_id}/drive/items/{item_id}"
CONTENT_SUFFIX = ":/content"
UPLOAD_SESSION_SUFFIX = ":/createUploadSession"


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json", headers=headers)


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return _json({"error": {"code": code, "message": message}}, status, headers)


def _failure(exc: ConnectorError, account_id: str, what: str) -> func.HttpResponse:
    status = status_for(exc)
    if isinstance(exc, MissingScopeError):
        return _error(status, "missing_scope", f"the account was not granted any of {', '.join(exc.needed)}; "
                                               "connect it again with a Files scope")
    if isinstance(exc, UnknownUploadError):
        return _error(status, "not_found", "no such upload session: it expired, was cancelled or ended, "
                                           "or the id is not one this API gave for this account")
    if isinstance(exc, NotFoundError):
        return _error(status, "not_found", "no such account" if isinstance(exc, UnknownAccountError) else "no such item")
    if isinstance(exc, ConflictError):
        return _error(status, "name_conflict", "an item of that name exists (conflict=fail)")
    if isinstance(exc, ReauthRequiredError):
        return _error(status, "reauth_required", "the account must sign in again")
    if isinstance(exc, InvalidPathError):
        return _error(status, "invalid_path", str(exc))
    if isinstance(exc, PayloadTooLargeError):
        return _error(status, "too_large", str(exc))
    if isinstance(exc, InvalidInputError):
        return _error(status, "invalid_request", str(exc))
    if isinstance(exc, ThrottledError):
        seconds = drive_files.retry_after_seconds(exc)
        return _error(status, "throttled", f"Graph is throttling this account; retry after {seconds} s",
                      {"Retry-After": str(seconds)})
    if isinstance(exc, GraphError) and exc.status == 416:
        return _error(status, "invalid_range", "the range is not within the file")
    if isinstance(exc, GraphError) and exc.status == 403:
        return _error(status, "access_denied", "Graph refused access to this item")
    if isinstance(exc, GraphError) and exc.status == 400:
        return _error(status, "rejected_by_graph", f"Graph refused the request ({exc.code})")
    log.warning("account %s: %s failed: %s", account_id, what, type(exc).__name__)
    return _error(status, "upstream_error", f"{what} failed ({type(exc).__name__}); try again")


def _ids(req: func.HttpRequest) -> tuple[str, str]:
    return req.route_params.get("account_id", ""), req.route_params.get("item_id", "")


@bp.function_name("files_item")
@bp.route(route=ITEM_ROUTE, methods=["GET", "DELETE"], auth_level=func.AuthLevel.FUNCTION)
@secured
def files_item(req: func.HttpRequest) -> func.HttpResponse:
    account_id, item_id = _ids(req)
    services = bootstrap.services()
    try:
        if req.method.upper() == "DELETE":
            drive_files.delete_item(services, account_id, item_id)
            return func.HttpResponse(status_code=204)
        return _json(drive_files.get_item(services, account_id, item_id))
    except ConnectorError as exc:
        return _failure(exc, account_id, f"{req.method.upper()} item")


@bp.function_name("files_children")
@bp.route(route=f"{ITEM_ROUTE}/children", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@secured
def files_children(req: func.HttpRequest) -> func.HttpResponse:
    account_id, item_id = _ids(req)
    try:
        items, continuation = drive_files.list_children(
            bootstrap.services(), account_id, item_id,
            size=drive_files.page_size(req.params.get("size")),
            continuation=req.params.get("continuation") or None,
        )
    except ConnectorError as exc:
        return _failure(exc, account_id, "listing children")
    return _json({"items": items, "continuation": continuation})


@bp.function_name("files_content")
@bp.route(route=f"{ITEM_ROUTE}/content", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@secured
def files_content(req: func.HttpRequest) -> func.HttpResponse | StreamingResponse:
    account_id, item_id = _ids(req)
    try:
        download = drive_files.download(
            bootstrap.services(), account_id, item_id, range_header=req.headers.get("range")
        )
    except ConnectorError as exc:
        return _failure(exc, account_id, "download")
    # The file's own type, without the "; charset=utf-8" a media type alone would get.
    headers = {"Content-Type": download.content_type}
    if download.size is not None:
        headers["Content-Length"] = str(download.size)
    if download.content_range:
        headers["Content-Range"] = download.content_range
    return StreamingResponse(download.chunks, status_code=download.status, headers=headers)


@bp.function_name("files_create_link")
@bp.route(route=f"{ITEM_ROUTE}/createLink", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@secured
def files_create_link(req: func.HttpRequest) -> func.HttpResponse:
    account_id, item_id = _ids(req)
    try:
        body = json.loads(req.get_body() or b"null")
    except (UnicodeDecodeError, ValueError):
        return _error(400, "invalid_json", "the body is not JSON")
    try:
        link_type, scope = drive_files.link_request(body)
        link = drive_files.create_link(bootstrap.services(), account_id, item_id, link_type=link_type, scope=scope)
    except ConnectorError as exc:
        return _failure(exc, account_id, "createLink")
    return _json(link)


@bp.function_name("files_by_path")
@bp.route(route="accounts/{account_id}/drive/root:/{*path}", methods=["GET", "PUT", "POST"],
          auth_level=func.AuthLevel.FUNCTION)
@secured
def files_by_path(req: func.HttpRequest) -> func.HttpResponse:
    account_id = req.route_params.get("account_id", "")
    raw = req.route_params.get("path") or ""
    services = bootstrap.services()
    try:
        if req.method.upper() == "POST":
            if not raw.endswith(UPLOAD_SESSION_SUFFIX):
                return _error(400, "invalid_path", "open an upload session at root:/{path}:/createUploadSession")
            session = drive_uploads.open_upload(
                services, account_id, _path(raw[: -len(UPLOAD_SESSION_SUFFIX)]),
                conflict=req.params.get("conflict") or "replace",
            )
            return _json(session)
        if req.method.upper() == "PUT":
            if not raw.endswith(CONTENT_SUFFIX):
                return _error(400, "invalid_path", "upload to root:/{path}:/content")
            result = drive_files.upload_file(
                services, account_id, _path(raw[: -len(CONTENT_SUFFIX)]), req.get_body(),
                conflict=req.params.get("conflict") or "replace",
            )
            return _json(result.item, 201 if result.created else 200)
        if not raw.endswith(":") or raw.endswith(CONTENT_SUFFIX):
            return _error(400, "invalid_path", "address an item as root:/{path}:")
        return _json(drive_files.get_item_by_path(services, account_id, _path(raw[:-1])))
    except ConnectorError as exc:
        return _failure(exc, account_id, f"{req.method.upper()} by path")


@bp.function_name("files_upload")
@bp.route(route="accounts/{account_id}/drive/uploads/{upload_id}", methods=["GET", "PUT", "DELETE"],
          auth_level=func.AuthLevel.FUNCTION)
@secured
def files_upload(req: func.HttpRequest) -> func.HttpResponse:
    # The upload id is a handle to write the file: it is never logged.
    account_id = req.route_params.get("account_id", "")
    upload_id = req.route_params.get("upload_id", "")
    services = bootstrap.services()
    method = req.method.upper()
    try:
        if method == "DELETE":
            drive_uploads.cancel_upload(services, account_id, upload_id)
            return func.HttpResponse(status_code=204)
        if method == "GET":
            return _json({"nextExpectedRanges": list(drive_uploads.upload_status(services, account_id, upload_id))})
        result = drive_uploads.put_fragment(
            services, account_id, upload_id, req.get_body(), req.headers.get("content-range")
        )
    except GraphError as exc:
        if exc.status == 416:
            return _error(416, "invalid_range", "the session expects other bytes (an overlap or a gap); "
                                                "GET the upload for its nextExpectedRanges")
        return _failure(exc, account_id, f"{method} upload fragment")
    except ConnectorError as exc:
        return _failure(exc, account_id, f"{method} upload fragment")
    if result.item is None:
        return _json({"nextExpectedRanges": list(result.next_expected_ranges)}, 202)
    return _json(result.item, 201 if result.created else 200)


def _path(text: str) -> str:
    if not text.strip("/"):
        raise InvalidPathError("the path is empty")
    return text
