"""Drive subscriptions made with Microsoft's own Graph SDK (``msgraph-sdk``), as the
connector makes them: ``/me/drive/root``, ``updated``, a lifecycle URL, 42,300 minutes less
a margin; then renewed, reauthorized and deleted. The simulator must answer as Graph does
(https://learn.microsoft.com/graph/api/subscription-post-subscriptions,
https://learn.microsoft.com/graph/change-notifications-lifecycle-events)."""

from __future__ import annotations

import datetime as dt

import pytest
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.subscription import Subscription

from .conftest import GraphSdk, WebhookReceiver
from .drive_helpers import graph_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

DRIVE_ITEM_MAX = dt.timedelta(minutes=42_300)  # "driveItem: 42,300 minutes (under 30 days)"


def _sdk(graphsim, confidential_app, sign_in, user, scopes=None) -> GraphSdk:
    session = graph_for(graphsim, confidential_app, sign_in, user["userPrincipalName"], scopes)
    session.close()
    return GraphSdk(graphsim, session.token)


@pytest.fixture
def sdk(graphsim, confidential_app, sign_in, sim_user):
    client = _sdk(graphsim, confidential_app, sign_in, sim_user)
    yield client
    client.close()


def _drive_root(webhook: WebhookReceiver, lifetime: dt.timedelta, **fields) -> Subscription:
    return Subscription(
        change_type=fields.pop("change_type", "updated"), notification_url=webhook.url,
        lifecycle_notification_url=webhook.lifecycle_url, resource="/me/drive/root",
        expiration_date_time=dt.datetime.now(dt.UTC) + lifetime, client_state="v2.k.account.nonce.mac", **fields)


def _status(error: pytest.ExceptionInfo[ODataError]) -> int | None:
    return error.value.response_status_code


def test_the_sdk_subscribes_to_the_drive_root_for_the_longest_lifetime_and_renews_reauthorizes_deletes(
        sdk: GraphSdk, sim, webhook: WebhookReceiver):
    created = sdk.run(sdk.client.subscriptions.post(_drive_root(webhook, DRIVE_ITEM_MAX - dt.timedelta(minutes=30))))

    assert created.id and created.resource == "/me/drive/root" and created.change_type == "updated"
    assert created.lifecycle_notification_url == webhook.lifecycle_url
    assert created.expiration_date_time > dt.datetime.now(dt.UTC) + DRIVE_ITEM_MAX - dt.timedelta(minutes=31)
    assert len(webhook.validations) == 2  # the notification and the lifecycle URL
    stored = sim.get(f"/subscriptions/{created.id}").json()
    assert stored["clientState"] == "v2.k.account.nonce.mac"

    renewed = sdk.run(sdk.client.subscriptions.by_subscription_id(created.id).patch(
        Subscription(expiration_date_time=dt.datetime.now(dt.UTC) + DRIVE_ITEM_MAX - dt.timedelta(minutes=1))))
    assert renewed.expiration_date_time > created.expiration_date_time
    with pytest.raises(ODataError) as too_far:
        sdk.run(sdk.client.subscriptions.by_subscription_id(created.id).patch(
            Subscription(expiration_date_time=dt.datetime.now(dt.UTC) + DRIVE_ITEM_MAX + dt.timedelta(minutes=5))))
    assert _status(too_far) == 400

    sdk.run(sdk.client.subscriptions.by_subscription_id(created.id).reauthorize.post())
    sdk.run(sdk.client.subscriptions.by_subscription_id(created.id).delete())
    assert sim.get(f"/subscriptions/{created.id}").status_code == 404
    with pytest.raises(ODataError) as gone:
        sdk.run(sdk.client.subscriptions.by_subscription_id(created.id).reauthorize.post())
    assert _status(gone) == 404


def test_a_drive_subscription_past_42300_minutes_or_for_other_change_types_is_refused(sdk: GraphSdk, webhook):
    with pytest.raises(ODataError) as too_long:
        sdk.run(sdk.client.subscriptions.post(_drive_root(webhook, DRIVE_ITEM_MAX + dt.timedelta(minutes=5))))
    assert _status(too_long) == 400
    for change_type in ("created,updated,deleted", "deleted"):
        with pytest.raises(ODataError) as refused:
            sdk.run(sdk.client.subscriptions.post(_drive_root(webhook, dt.timedelta(days=1), change_type=change_type)))
        assert _status(refused) == 400


def test_a_second_drive_subscription_of_the_same_app_is_a_409_until_the_first_is_deleted(sdk: GraphSdk, webhook):
    first = sdk.run(sdk.client.subscriptions.post(_drive_root(webhook, dt.timedelta(days=2))))
    validations = len(webhook.validations)

    with pytest.raises(ODataError) as conflict:
        sdk.run(sdk.client.subscriptions.post(_drive_root(webhook, dt.timedelta(days=2))))
    assert _status(conflict) == 409
    assert first.id in str(conflict.value.error.message)
    assert len(webhook.validations) == validations  # refused before the handshake

    sdk.run(sdk.client.subscriptions.by_subscription_id(first.id).delete())
    again = sdk.run(sdk.client.subscriptions.post(_drive_root(webhook, dt.timedelta(days=2))))
    assert again.id != first.id


def test_without_a_files_scope_the_drive_subscription_is_403_and_without_mail_the_mail_one(
        graphsim, confidential_app, sign_in, sim_user, webhook):
    mail_only = _sdk(graphsim, confidential_app, sign_in, sim_user, ["User.Read", "Mail.Read"])
    files_only = _sdk(graphsim, confidential_app, sign_in, sim_user, ["User.Read", "Files.ReadWrite.All"])
    try:
        with pytest.raises(ODataError) as no_files:
            mail_only.run(mail_only.client.subscriptions.post(_drive_root(webhook, dt.timedelta(days=1))))
        assert _status(no_files) == 403
        with pytest.raises(ODataError) as no_mail:
            files_only.run(files_only.client.subscriptions.post(Subscription(
                change_type="created,updated,deleted", notification_url=webhook.url,
                resource="/me/mailFolders('inbox')/messages",
                expiration_date_time=dt.datetime.now(dt.UTC) + dt.timedelta(days=1), client_state="s")))
        assert _status(no_mail) == 403
        assert webhook.validations == []
    finally:
        mail_only.close()
        files_only.close()


def test_a_drive_subscription_gets_reauthorization_required_at_its_lifecycle_url(sdk: GraphSdk, sim, webhook):
    created = sdk.run(sdk.client.subscriptions.post(_drive_root(webhook, dt.timedelta(days=3))))

    assert sim.post(f"/subscriptions/{created.id}/lifecycle", json={"event": "reauthorizationRequired"}).status_code == 202
    assert webhook.wait_for(lambda: len(webhook.items("/api/lifecycle")) == 1)
    [event] = webhook.items("/api/lifecycle")
    assert event["lifecycleEvent"] == "reauthorizationRequired"
    assert event["subscriptionId"] == created.id and event["clientState"] == "v2.k.account.nonce.mac"
    for outlook_only in ("subscriptionRemoved", "missed"):  # Outlook resources only
        assert sim.post(f"/subscriptions/{created.id}/lifecycle", json={"event": outlook_only}).status_code == 400
