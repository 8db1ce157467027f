"""Operators' API (function key): GET /api/accounts, GET|DELETE /api/accounts/{id},
POST /api/accounts/{id}/resync.

JSON in and out; an error is ``{"error": "<reason>"}`` with the status of
``functions.api_errors.status_for``. ``DELETE`` disconnects the account: its Graph subscriptions and its token
cache are deleted, the account stays, marked ``disconnected``; it is idempotent. ``resync``
runs a delta round now (what a notification would trigger) and says what it published.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import azure.functions as func

from functions.api_errors import status_for
from functions.http import secured
from shared import bootstrap
from shared.accounts import account_summary, list_accounts, show_account
from shared.connect import disconnect_account
from shared.errors import ConnectorError, InvalidInputError, NotFoundError
from shared.sync import sync_mailbox

bp = func.Blueprint()
log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 50


def _json(body: Any, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json")


def _error(status: int, message: str) -> func.HttpResponse:
    return _json({"error": message}, status)


@bp.function_name("accounts_list")
@bp.route(route="accounts", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@secured
def accounts_list(req: func.HttpRequest) -> func.HttpResponse:
    try:
        size = int(req.params.get("size", DEFAULT_PAGE_SIZE))
        accounts, continuation = list_accounts(
            bootstrap.services(), size=size, continuation=req.params.get("continuation"),
            owner_id=req.params.get("ownerId"),
        )
    except ValueError:
        return _error(400, "size must be a whole number")
    except InvalidInputError as exc:
        return _error(status_for(exc), str(exc))
    except ConnectorError as exc:
        log.warning("accounts: listing failed: %s", type(exc).__name__)
        return _error(status_for(exc), "accounts could not be read")
    return _json({"accounts": accounts, "continuation": continuation})


@bp.function_name("accounts_item")
@bp.route(route="accounts/{account_id}", methods=["GET", "DELETE"], auth_level=func.AuthLevel.FUNCTION)
@secured
def accounts_item(req: func.HttpRequest) -> func.HttpResponse:
    account_id = req.route_params.get("account_id", "")
    services = bootstrap.services()
    try:
        if req.method.upper() == "DELETE":
            return _json(account_summary(services, disconnect_account(services, account_id)))
        return _json(show_account(services, account_id))
    except NotFoundError as exc:
        return _error(status_for(exc), "no such account")
    except InvalidInputError as exc:
        return _error(status_for(exc), str(exc))
    except ConnectorError as exc:
        log.warning("account %s: %s failed: %s", account_id, req.method, type(exc).__name__)
        return _error(status_for(exc), "the account could not be handled right now; try again")


@bp.function_name("accounts_resync")
@bp.route(route="accounts/{account_id}/resync", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@secured
def accounts_resync(req: func.HttpRequest) -> func.HttpResponse:
    account_id = req.route_params.get("account_id", "")
    services = bootstrap.services()
    try:
        if services.accounts.get(account_id) is None:
            return _error(404, "no such account")
        result = sync_mailbox(services, account_id, reason="operator")
    except InvalidInputError as exc:
        return _error(status_for(exc), str(exc))
    except ConnectorError as exc:
        log.warning("account %s: resync failed: %s", account_id, type(exc).__name__)
        return _error(status_for(exc), f"the resync failed ({type(exc).__name__}); try again")
    return _json(
        {
            "account": account_id,
            "created": result.created,
            "updated": result.updated,
            "deleted": result.deleted,
            "pages": result.pages,
            "restarted": result.restarted,
            "skipped": result.skipped,
        }
    )
