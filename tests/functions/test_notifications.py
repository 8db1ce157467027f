"""POST /api/notifications and /api/lifecycle, called as the host calls them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest

from shared import bootstrap
from shared.webhook import MAX_BODY_BYTES, MAX_ITEMS
from tests.fakes import make_services
from tests.support.app import handler, http_request
from tests.unit.pipeline_fakes import lifecycle, notification

CORPUS = Path(__file__).resolve().parents[1] / "data" / "bad_webhook_inputs"
ADELE = "adele-oid.tenant-1"
MEGAN = "megan-oid.tenant-2"
SUB_A = "aaaaaaaa-0000-4000-8000-000000000001"
SUB_M = "bbbbbbbb-0000-4000-8000-000000000002"


class Outbox:
    def __init__(self) -> None:
        self.value: Any = None

    def set(self, value: Any) -> None:
        self.value = value

    def get(self) -> Any:
        return self.value


@pytest.fixture(autouse=True)
def services() -> Iterator[Any]:
    installed = make_services(real_tokens=False)
    bootstrap.use(installed)
    yield installed
    bootstrap.use(None)


def post(function: str, body: bytes = b"", params: dict[str, str] | None = None) -> tuple[Any, Outbox]:
    outbox = Outbox()
    route = "notifications" if function == "graph_notifications" else "lifecycle"
    request = http_request("POST", f"http://127.0.0.1/api/{route}", body=body, params=params)
    response = handler(function)(req=request, outbox=outbox)
    return response, outbox


def queued(outbox: Outbox) -> list[dict[str, Any]]:
    """The triggers the queued messages carry (a POST's triggers travel together)."""
    return [t for m in outbox.value or [] for t in json.loads(m)["triggers"]]


def batch(*items: Any) -> bytes:
    return json.dumps({"value": list(items)}).encode()


def test_the_validation_handshake_echoes_the_token_as_plain_text() -> None:
    response, outbox = post(
        "graph_notifications", params={"validationToken": "Validation: Testing client application"}
    )
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert response.get_body() == b"Validation: Testing client application"
    assert outbox.value is None


def test_valid_notifications_are_queued_as_one_trigger_per_account_in_one_message_and_answered_202() -> None:
    body = batch(
        notification(ADELE, SUB_A),
        notification(ADELE, SUB_A, change_type="updated"),
        notification(MEGAN, SUB_M),
    )
    response, outbox = post("graph_notifications", body)
    assert response.status_code == 202
    assert len(outbox.value) == 1
    triggers = {t["accountId"]: t for t in queued(outbox)}
    assert set(triggers) == {ADELE, MEGAN}
    assert {c["subscriptionId"] for c in triggers[ADELE]["changed"]} == {SUB_A}
    assert triggers[ADELE]["changes"] == 2
    assert triggers[MEGAN]["changes"] == 1


def test_forged_items_are_dropped_and_counted_while_the_valid_ones_are_queued() -> None:
    forged = notification(ADELE, clientState="v1.adele-oid.tenant-1.nonce.AAAAAAAAAAAAAAAAAAAAAA")
    response, outbox = post("graph_notifications", batch(forged, notification(MEGAN, SUB_M)))
    assert response.status_code == 202
    assert response.get_body() == b"accepted 1, dropped 1"
    assert [t["accountId"] for t in queued(outbox)] == [MEGAN]


def test_a_batch_of_only_forged_items_queues_nothing() -> None:
    forged = notification(ADELE, clientState="not-ours")
    response, outbox = post("graph_notifications", batch(forged, forged))
    assert response.status_code == 202
    assert outbox.value is None


def test_the_clientstate_is_never_echoed_or_logged(caplog: pytest.LogCaptureFixture) -> None:
    secret_looking = "v1.adele-oid.tenant-1.nonce.SECRETSECRETSECRETSECRE"
    response, _ = post("graph_notifications", batch(notification(ADELE, clientState=secret_looking)))
    assert secret_looking.encode() not in response.get_body()
    assert secret_looking not in caplog.text


def test_lifecycle_events_are_queued_with_their_subscription() -> None:
    response, outbox = post("graph_lifecycle", batch(lifecycle(ADELE, "missed", SUB_A)))
    assert response.status_code == 202
    [trigger] = queued(outbox)
    [event] = trigger["lifecycle"]
    assert (event["subscriptionId"], event["event"]) == (SUB_A, "missed")
    assert trigger["changes"] == 0


def test_a_lifecycle_event_sent_to_the_notification_url_is_accepted_too() -> None:
    # Graph sends lifecycle events to notificationUrl when no lifecycleNotificationUrl is set.
    _, outbox = post("graph_notifications", batch(lifecycle(ADELE, "subscriptionRemoved", SUB_A)))
    assert queued(outbox)[0]["lifecycle"][0]["event"] == "subscriptionRemoved"


def test_a_body_over_the_limit_is_413() -> None:
    response, outbox = post("graph_notifications", b" " * (MAX_BODY_BYTES + 1))
    assert response.status_code == 413
    assert outbox.value is None


def test_too_many_items_is_413() -> None:
    response, outbox = post("graph_notifications", batch(*([{"x": 1}] * (MAX_ITEMS + 1))))
    assert response.status_code == 413
    assert outbox.value is None


def _corpus() -> list[Path]:
    return sorted(CORPUS.iterdir())


def test_the_corpus_of_bad_inputs_is_large_enough() -> None:
    assert len(_corpus()) >= 30


@pytest.mark.parametrize("function", ["graph_notifications", "graph_lifecycle"])
@pytest.mark.parametrize("case", _corpus(), ids=lambda p: p.stem)
def test_bad_input_gets_a_4xx_or_a_counted_drop_and_queues_nothing(case: Path, function: str) -> None:
    raw = case.read_bytes()
    if case.suffix == ".query":
        params = dict(parse_qsl(raw.decode(), keep_blank_values=True))
        response, outbox = post(function, params=params)
        assert response.status_code in (200, 400)
        assert response.mimetype == "text/plain"
        if response.status_code == 200:
            assert response.get_body().decode() == params["validationToken"]
    else:
        response, outbox = post(function, raw)
        assert 400 <= response.status_code < 500 or (
            response.status_code == 202 and response.get_body().startswith(b"accepted 0,")
        ), (response.status_code, response.get_body())
        assert response.get_body()  # a reason, always
    assert outbox.value is None


def test_the_corpus_items_with_bad_ids_carry_a_valid_clientstate_so_the_id_is_what_drops_them() -> None:
    document = json.loads((CORPUS / "48-subscription-id-slash.body").read_bytes())
    document["value"][0]["subscriptionId"] = SUB_A
    response, outbox = post("graph_notifications", json.dumps(document).encode())
    assert response.get_body() == b"accepted 1, dropped 0"
    assert len(queued(outbox)) == 1
