"""The mail routes and the command trigger through the registered handlers, over fakes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import azure.functions as func
import pytest
from azure.functions.queue import QueueMessage

from shared import bootstrap
from shared.errors import ThrottledError
from tests.support.app import app_functions, handler, http_request
from tests.unit.test_mail_actions import ACCOUNT, services_with

BASE = "https://connector.example.test/api"


@pytest.fixture
def services() -> Iterator[Any]:
    installed = services_with()
    bootstrap.use(installed)
    yield installed
    bootstrap.use(None)


def call(name: str, method: str, *, message_id: str = "", body: Any = None, raw: bytes | None = None,
         account_id: str = ACCOUNT, **params: str) -> func.HttpResponse:
    route = {"account_id": account_id}
    if message_id:
        route["message_id"] = message_id
    if "attachment_id" in params:
        route["attachment_id"] = params.pop("attachment_id")
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
    return handler(name)(http_request(method, f"{BASE}/accounts/{account_id}/x", body=data, params=params,
                                      route_params=route))


def error(response: func.HttpResponse) -> dict[str, Any]:
    assert response.mimetype == "application/json"
    return dict(json.loads(response.get_body())["error"])


def test_every_mail_route_is_registered_with_a_function_key() -> None:
    functions = app_functions()
    expected = {
        "messages_list": ("accounts/{account_id}/messages", {"GET"}),
        "messages_item": ("accounts/{account_id}/messages/{message_id}", {"GET", "PATCH", "DELETE"}),
        "messages_move": ("accounts/{account_id}/messages/{message_id}/move", {"POST"}),
        "messages_attachment": ("accounts/{account_id}/messages/{message_id}/attachments/{attachment_id}", {"GET"}),
        "folders_list": ("accounts/{account_id}/folders", {"GET"}),
    }
    for name, (route, methods) in expected.items():
        trigger = functions[name].get_trigger()
        assert trigger.route == route
        assert {str(m).rsplit(".", 1)[-1] for m in trigger.methods} == methods
        assert str(trigger.auth_level).endswith("FUNCTION")
    queue = functions["run_mail_commands"].get_trigger()
    assert queue.queue_name == "mail-commands"


def test_a_read_returns_the_message_as_json(services: Any) -> None:
    sent = services.graph.add_message(ACCOUNT, "hello")
    response = call("messages_item", "GET", message_id=sent["id"], bodyType="text")
    assert response.status_code == 200
    assert json.loads(response.get_body())["body"]["contentType"] == "text"


def test_each_typed_error_has_its_status_and_code(services: Any) -> None:
    sent = services.graph.add_message(ACCOUNT, "x")
    assert error(call("messages_item", "GET", message_id="nope")) == {
        "code": "not_found", "message": "no such account, message, attachment or folder"}
    assert call("messages_item", "GET", message_id="nope").status_code == 404
    assert call("messages_item", "GET", message_id=sent["id"], bodyType="rtf").status_code == 400
    services.graph.fail["get_message"] = [ThrottledError("slow down", 12.4)]
    throttled = call("messages_item", "GET", message_id=sent["id"])
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "13"
    assert error(throttled)["code"] == "throttled"


def test_delete_is_204_and_permanent_must_be_true_or_false(services: Any) -> None:
    sent = services.graph.add_message(ACCOUNT, "x")
    assert call("messages_item", "DELETE", message_id=sent["id"], permanent="nope").status_code == 400
    response = call("messages_item", "DELETE", message_id=sent["id"], permanent="true")
    assert response.status_code == 204 and sent["id"] not in services.graph.box(ACCOUNT).messages


def test_a_body_that_is_not_json_is_400(services: Any) -> None:
    sent = services.graph.add_message(ACCOUNT, "x")
    for name in ("messages_move", "messages_item"):
        method = "POST" if name == "messages_move" else "PATCH"
        response = call(name, method, message_id=sent["id"], raw=b"{oops")
        assert response.status_code == 400 and error(response)["code"] == "invalid_request"


def test_an_attachment_comes_as_bytes_with_a_safe_disposition(services: Any) -> None:
    sent = services.graph.add_message(
        ACCOUNT, "x", attachments=[('re"port\u00e9.html', "text/html", b"<script>alert(1)</script>")]
    )
    [attachment] = services.graph.box(ACCOUNT).attachments[sent["id"]]
    response = call("messages_attachment", "GET", message_id=sent["id"], attachment_id=attachment["id"])
    assert response.status_code == 200 and response.get_body() == b"<script>alert(1)</script>"
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="re_port_.html"')
    assert unquote(disposition.split("filename*=UTF-8''")[1]) == 're"port\u00e9.html'
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_an_attachment_over_the_limit_is_413(services: Any) -> None:
    limit = services.settings.max_attachment_bytes
    sent = services.graph.add_message(ACCOUNT, "x", attachments=[("big.bin", "application/octet-stream",
                                                                  b"0" * (limit + 1))])
    [attachment] = services.graph.box(ACCOUNT).attachments[sent["id"]]
    response = call("messages_attachment", "GET", message_id=sent["id"], attachment_id=attachment["id"])
    assert response.status_code == 413 and error(response)["code"] == "too_large"


def test_folders_come_as_a_json_array(services: Any) -> None:
    response = call("folders_list", "GET")
    assert response.status_code == 200
    folders = json.loads(response.get_body())
    assert isinstance(folders, list) and {"inbox", "archive"} <= {f.get("wellKnownName") for f in folders}


def test_the_command_trigger_publishes_a_result_and_never_raises_for_bad_input(services: Any) -> None:
    trigger = handler("run_mail_commands")
    trigger(QueueMessage(id="q1", body=b"garbage", dequeue_count=1))
    [result] = services.queues.sent["mail-command-results"]
    assert json.loads(result)["type"] == "com.m365connector.command.failed"
