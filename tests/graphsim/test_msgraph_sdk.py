"""Microsoft's own Graph SDK (``msgraph-sdk``) against the simulator, for everything the mail actions use.

Each test calls the SDK exactly as an application would (request builders, models,
``RequestConfiguration`` with headers and query parameters, ``BatchRequestContent``) and
checks the outcome through the SDK's answers and the simulator's control API.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
from typing import Any

import pytest
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.method import Method
from kiota_abstractions.request_information import RequestInformation
from msgraph.generated.models.file_attachment import FileAttachment
from msgraph.generated.models.followup_flag import FollowupFlag
from msgraph.generated.models.followup_flag_status import FollowupFlagStatus
from msgraph.generated.models.mail_folder import MailFolder
from msgraph.generated.models.message import Message
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.subscription import Subscription
from msgraph.generated.users.item.mail_folders.item.messages.messages_request_builder import (
    MessagesRequestBuilder,
)
from msgraph.generated.users.item.messages.item.move.move_post_request_body import MovePostRequestBody
from msgraph_core.requests.batch_request_content import BatchRequestContent
from msgraph_core.requests.batch_request_item import BatchRequestItem

from .conftest import ControlSession, GraphSdk, WebhookReceiver

# The generated request builders still build their deprecated per-builder configuration classes.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

IMMUTABLE = 'IdType="ImmutableId"'


def _deliver(sim: ControlSession, user: dict[str, Any], **fields: Any) -> dict[str, Any]:
    response = sim.post(f"/users/{user['id']}/messages", json={"subject": "hello", **fields})
    assert response.status_code == 201, response.text
    return response.json()


def _stored(sim: ControlSession, user: dict[str, Any], message_id: str) -> dict[str, Any]:
    response = sim.get(f"/users/{user['id']}/messages/{message_id}")
    assert response.status_code == 200, response.text
    return response.json()


def _prefer(value: str, query: Any = None) -> RequestConfiguration[Any]:
    config: RequestConfiguration[Any] = RequestConfiguration(query_parameters=query)
    config.headers.add("Prefer", value)
    return config


def _folder_id(sdk: GraphSdk, name: str) -> str:
    folder = sdk.run(sdk.client.me.mail_folders.by_mail_folder_id(name).get())
    return str(folder.id)


def test_the_sdk_follows_a_folder_delta_through_pages_and_then_its_changes(graph_sdk: GraphSdk, sim, sim_user):
    first = [_deliver(sim, sim_user, subject=f"m{n}") for n in range(3)]
    delta = graph_sdk.client.me.mail_folders.by_mail_folder_id("inbox").messages.delta
    page = graph_sdk.run(delta.get(request_configuration=_prefer("odata.maxpagesize=2")))
    seen = [m.id for m in page.value]
    assert len(seen) == 2 and page.odata_next_link and not page.odata_delta_link
    page = graph_sdk.run(delta.with_url(page.odata_next_link).get())
    seen += [m.id for m in page.value]
    assert sorted(seen) == sorted(m["id"] for m in first) and page.odata_delta_link

    new = _deliver(sim, sim_user, subject="later")
    sim.patch(f"/users/{sim_user['id']}/messages/{first[0]['id']}", json={"folder": "archive"}).raise_for_status()
    changes = graph_sdk.run(delta.with_url(page.odata_delta_link).get())
    by_id = {m.id: m for m in changes.value}
    assert set(by_id) == {new["id"], first[0]["id"]}
    assert by_id[new["id"]].subject == "later"
    assert by_id[first[0]["id"]].additional_data.get("@removed") == {"reason": "deleted"}


def test_the_sdk_patches_read_state_categories_and_flag(graph_sdk: GraphSdk, sim, sim_user):
    message = _deliver(sim, sim_user)
    patch = Message(is_read=True, categories=["Clients", "Red"], flag=FollowupFlag(flag_status=FollowupFlagStatus.Flagged))
    updated = graph_sdk.run(graph_sdk.client.me.messages.by_message_id(message["id"]).patch(patch))
    assert updated.is_read is True and updated.categories == ["Clients", "Red"]
    assert updated.flag.flag_status == FollowupFlagStatus.Flagged
    stored = _stored(sim, sim_user, message["id"])
    # the SDK's @odata.type annotations are not stored as data
    assert stored["flag"] == {"flagStatus": "flagged"} and stored["isRead"] is True


def test_a_move_through_the_sdk_gives_a_new_id_unless_immutable_ids_were_asked(graph_sdk: GraphSdk, sim, sim_user):
    archive = _folder_id(graph_sdk, "archive")
    plain, stable = _deliver(sim, sim_user, subject="plain"), _deliver(sim, sim_user, subject="stable")
    messages = graph_sdk.client.me.messages

    moved = graph_sdk.run(messages.by_message_id(plain["id"]).move.post(MovePostRequestBody(destination_id="archive")))
    assert moved.id != plain["id"] and moved.parent_folder_id == archive

    immutable_id = graph_sdk.run(messages.by_message_id(stable["id"]).get(request_configuration=_prefer(IMMUTABLE))).id
    assert immutable_id == stable["immutableId"] != stable["id"]
    kept = graph_sdk.run(messages.by_message_id(immutable_id).move.post(
        MovePostRequestBody(destination_id=archive), request_configuration=_prefer(IMMUTABLE)))
    assert kept.id == immutable_id and kept.parent_folder_id == archive
    listed = graph_sdk.run(graph_sdk.client.me.mail_folders.by_mail_folder_id("archive").messages.get(
        request_configuration=_prefer(IMMUTABLE)))
    assert {m.id for m in listed.value} == {immutable_id, _stored(sim, sim_user, moved.id)["immutableId"]}
    again = graph_sdk.run(messages.by_message_id(immutable_id).move.post(
        MovePostRequestBody(destination_id="inbox"), request_configuration=_prefer(IMMUTABLE)))
    assert again.id == immutable_id
    with pytest.raises(ODataError) as gone:
        graph_sdk.run(messages.by_message_id(plain["id"]).get())
    assert gone.value.response_status_code == 404


def test_the_sdk_deletes_into_deleted_items_and_deletes_permanently(graph_sdk: GraphSdk, sim, sim_user):
    deleted_items = _folder_id(graph_sdk, "deleteditems")
    soft, hard = _deliver(sim, sim_user, subject="soft"), _deliver(sim, sim_user, subject="hard")
    messages = graph_sdk.client.me.messages
    graph_sdk.run(messages.by_message_id(soft["id"]).delete())
    in_bin = graph_sdk.run(graph_sdk.client.me.mail_folders.by_mail_folder_id("deleteditems").messages.get())
    assert [m.subject for m in in_bin.value] == ["soft"] and in_bin.value[0].parent_folder_id == deleted_items

    graph_sdk.run(messages.by_message_id(hard["id"]).permanent_delete.post())
    assert sim.get(f"/users/{sim_user['id']}/messages/{hard['id']}").status_code == 404
    subjects = {m["subject"] for m in sim.get(f"/users/{sim_user['id']}/messages").json()["value"]}
    assert subjects == {"soft"}


def test_the_sdk_reads_attachments_their_bytes_and_their_raw_value(graph_sdk: GraphSdk, sim, sim_user):
    pdf = b"%PDF-1.7 not really" + bytes(range(256))
    message = _deliver(sim, sim_user, attachments=[
        {"name": "invoice.pdf", "contentType": "application/pdf", "contentBytes": base64.b64encode(pdf).decode()},
        {"name": "note.txt", "contentType": "text/plain", "contentBytes": base64.b64encode(b"hi").decode()},
    ])
    item = graph_sdk.client.me.messages.by_message_id(message["id"])
    read = graph_sdk.run(item.get())
    assert read.has_attachments is True
    listed = graph_sdk.run(item.attachments.get())
    assert [(a.name, a.content_type, a.size) for a in listed.value] == [
        ("invoice.pdf", "application/pdf", len(pdf)), ("note.txt", "text/plain", 2)]
    one = graph_sdk.run(item.attachments.by_attachment_id(listed.value[0].id).get())
    assert isinstance(one, FileAttachment) and one.content_bytes == pdf

    # /$value has no request builder in the v1.0 SDK: the SDK's own request adapter sends it
    info = RequestInformation(Method.GET, "{+baseurl}/me/messages/{id}/attachments/{aid}/$value")
    info.path_parameters = {"baseurl": graph_sdk.client.request_adapter.base_url, "id": message["id"],
                            "aid": listed.value[0].id}
    raw = graph_sdk.run(graph_sdk.client.request_adapter.send_primitive_async(info, "bytes", {}))
    assert raw == pdf


def test_the_sdk_batches_an_update_a_move_and_a_read_in_one_request(graph_sdk: GraphSdk, sim, sim_user):
    first, second = _deliver(sim, sim_user, subject="one"), _deliver(sim, sim_user, subject="two")
    messages = graph_sdk.client.me.messages
    batch = BatchRequestContent()
    batch.add_request("read", BatchRequestItem(messages.by_message_id(first["id"]).to_patch_request_information(
        Message(is_read=True)), id="read"))
    batch.add_request("move", BatchRequestItem(messages.by_message_id(second["id"]).move.to_post_request_information(
        MovePostRequestBody(destination_id="archive")), id="move"))
    batch.add_request("get", BatchRequestItem(messages.by_message_id(first["id"]).to_get_request_information(),
                                              id="get"))
    sim.delete("/requests").raise_for_status()

    answer = graph_sdk.run(graph_sdk.client.batch.post(batch))

    assert answer.get_response_status_codes() == {"read": 200, "move": 201, "get": 200}
    assert "application/json" in answer.get_response_by_id("get").content_type
    # msgraph-core 1.5 reads only base64 bodies out of a batch answer (its issues #807, #835);
    # Graph sends JSON bodies as JSON objects, so the effects are checked in the mailbox
    assert _stored(sim, sim_user, first["id"])["isRead"] is True
    archive = _folder_id(graph_sdk, "archive")
    assert [m["subject"] for m in sim.get(f"/users/{sim_user['id']}/messages").json()["value"]
            if m["parentFolderId"] == archive] == ["two"]
    served = [r for r in sim.get("/requests").json()["value"] if r["path"] == "/v1.0/$batch"]
    assert len(served) == 1 and served[0]["status"] == 200
    assert sorted((r["id"], r["method"], r["status"]) for r in served[0]["requests"]) == [
        ("get", "GET", 200), ("move", "POST", 201), ("read", "PATCH", 200)]
    assert {r["userId"] for r in served[0]["requests"]} == {sim_user["id"]}


def test_the_sdk_creates_child_folders_and_sees_them_with_their_counts(graph_sdk: GraphSdk, sim, sim_user):
    inbox = graph_sdk.client.me.mail_folders.by_mail_folder_id("inbox")
    clients = graph_sdk.run(inbox.child_folders.post(MailFolder(display_name="Clients")))
    inbox_id = _folder_id(graph_sdk, "inbox")
    assert clients.parent_folder_id == inbox_id and clients.total_item_count == 0
    _deliver(sim, sim_user, folder=clients.id, subject="filed")
    _deliver(sim, sim_user, folder=clients.id, subject="read", isRead=True)

    children = graph_sdk.run(inbox.child_folders.get())
    assert [(f.display_name, f.total_item_count, f.unread_item_count) for f in children.value] == [("Clients", 2, 1)]
    top = graph_sdk.run(graph_sdk.client.me.mail_folders.get())
    by_name = {f.display_name: f for f in top.value}
    assert {"Inbox", "Archive", "Junk Email", "Deleted Items", "Drafts", "Sent Items"} <= set(by_name)
    assert by_name["Inbox"].child_folder_count == 1
    assert {f.parent_folder_id for f in top.value} == {graph_sdk.run(
        graph_sdk.client.me.mail_folders.by_mail_folder_id("msgfolderroot").get()).id}
    in_child = graph_sdk.run(graph_sdk.client.me.mail_folders.by_mail_folder_id(clients.id).messages.get())
    assert sorted(m.subject for m in in_child.value) == ["filed", "read"]
    with pytest.raises(ODataError) as twice:
        graph_sdk.run(inbox.child_folders.post(MailFolder(display_name="Clients")))
    assert twice.value.response_status_code == 409


def test_the_sdk_lists_a_folder_by_date_with_top_and_follows_the_next_link(graph_sdk: GraphSdk, sim, sim_user):
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    for days in (40, 3, 2, 1, 0):
        _deliver(sim, sim_user, subject=f"{days} days ago", receivedDateTime=(now - dt.timedelta(days=days)).isoformat())
    since = (now - dt.timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ")
    query = MessagesRequestBuilder.MessagesRequestBuilderGetQueryParameters(
        filter=f"receivedDateTime ge {since}", top=3, select=["subject", "receivedDateTime"],
        orderby=["receivedDateTime desc"])
    messages = graph_sdk.client.me.mail_folders.by_mail_folder_id("inbox").messages
    page = graph_sdk.run(messages.get(request_configuration=RequestConfiguration(query_parameters=query)))
    subjects = [m.subject for m in page.value]
    assert subjects == ["0 days ago", "1 days ago", "2 days ago"] and page.odata_next_link
    page = graph_sdk.run(messages.with_url(page.odata_next_link).get())
    assert [m.subject for m in page.value] == ["3 days ago"] and page.odata_next_link is None


def test_the_sdk_reads_an_html_body_as_text_when_it_asks_for_text(graph_sdk: GraphSdk, sim, sim_user):
    message = _deliver(sim, sim_user, body="<html><body><p>Dear <b>Adele</b>,</p><p>5 &lt; 7</p></body></html>",
                       bodyContentType="html", toRecipients=["adele@contoso.test"], ccRecipients=["megan@contoso.test"])
    item = graph_sdk.client.me.messages.by_message_id(message["id"])
    as_html = graph_sdk.run(item.get())
    assert as_html.body.content_type.value == "html" and "<b>Adele</b>" in as_html.body.content
    assert [r.email_address.address for r in as_html.cc_recipients] == ["megan@contoso.test"]
    as_text = graph_sdk.run(item.get(request_configuration=_prefer('outlook.body-content-type="text"')))
    assert as_text.body.content_type.value == "text"
    assert as_text.body.content.split() == ["Dear", "Adele,", "5", "<", "7"]
    assert as_text.conversation_id and as_text.internet_message_id and as_text.web_link


def test_a_mailbox_wide_subscription_made_by_the_sdk_notifies_a_move_with_its_immutable_id(
        graph_sdk: GraphSdk, sim, sim_user, webhook: WebhookReceiver):
    expiry = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    created = graph_sdk.run(graph_sdk.client.subscriptions.post(Subscription(
        change_type="created,updated,deleted", notification_url=webhook.url, resource="/me/messages",
        expiration_date_time=expiry, client_state="sdk-state"), request_configuration=_prefer(IMMUTABLE)))
    assert created.id and created.resource == "/me/messages"
    message = _deliver(sim, sim_user, subject="watched")
    graph_sdk.run(graph_sdk.client.me.messages.by_message_id(message["id"]).move.post(
        MovePostRequestBody(destination_id="junkemail")))
    assert webhook.wait_for(lambda: len(webhook.items()) >= 3)
    items = [(i["changeType"], i["resourceData"]["id"]) for i in webhook.items()]
    assert items == [("created", message["immutableId"]), ("deleted", message["immutableId"]),
                     ("created", message["immutableId"])]

    renewed = graph_sdk.run(graph_sdk.client.subscriptions.by_subscription_id(created.id).patch(
        Subscription(expiration_date_time=expiry + dt.timedelta(days=2))))
    assert renewed.expiration_date_time > created.expiration_date_time
    graph_sdk.run(graph_sdk.client.subscriptions.by_subscription_id(created.id).delete())
    assert sim.get(f"/subscriptions/{created.id}").status_code == 404


def test_the_sdk_waits_out_outlooks_concurrency_limit_with_retry_after(graph_sdk: GraphSdk, sim, sim_user):
    for n in range(3):
        _deliver(sim, sim_user, subject=f"m{n}")
    sim.put("/settings", json={"graphLatencyMs": 800, "throttleRetryAfterSeconds": 1}).raise_for_status()
    sim.delete("/requests").raise_for_status()
    inbox = graph_sdk.client.me.mail_folders.by_mail_folder_id("inbox")

    async def six_at_once() -> list[Any]:
        return list(await asyncio.gather(*(inbox.messages.get() for _ in range(6))))

    pages = graph_sdk.run(six_at_once())
    assert [len(p.value) for p in pages] == [3] * 6
    statuses = [r["status"] for r in sim.get("/requests").json()["value"]]
    # Outlook serves 4 at a time per app and mailbox; the SDK's retry handler honoured Retry-After
    assert statuses.count(429) >= 1 and statuses.count(200) == 6
