"""The drive subscription next to the mail one: connect, reconnect, 409, refusals and
disconnect, over fakes of every port (shared/subscriptions.py, shared/connect.py)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from shared.client_state import key_id, read_client_state
from shared.connect import complete_connect, disconnect_account, start_connect
from shared.drive_sync import DRIVE_LINK_KEY, drive_delta_link
from shared.errors import GraphError
from shared.models import AccountStatus, SubscriptionStatus
from shared.ports import GraphAuth
from shared.resources import DRIVE, MAIL
from shared.subscriptions import ensure_subscription, is_current, subscriptions_of
from tests.fakes import make_services, make_settings

BROWSER = "b" * 43
DRIVE_MAXIMUM = dt.timedelta(minutes=42_300)  # Graph's longest lifetime for drive items


def services_asking(scopes: str):
    return make_services(make_settings(GRAPH_SCOPES=scopes))


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    monkeypatch.setattr("shared.subscriptions.VALIDATION_RETRY_DELAY_SECONDS", 0)


def sign_in(services):
    start_connect(services, None, browser_binding=BROWSER)
    flow = services.identity.started[-1]
    return complete_connect(
        services, {"state": flow["state"], "code": f"code-for-{flow['state']}"}, browser_binding=BROWSER
    )


def queued_jobs(services):
    return [json.loads(m) for m in services.queues.sent.get("mail-sync", [])]


def test_a_files_only_grant_gets_one_drive_subscription_and_no_mail_one():
    services = services_asking("User.Read Files.ReadWrite.All")

    result = sign_in(services)

    account_id = result.account.account_id
    [graph_sub] = services.graph.for_account(account_id)
    assert graph_sub.resource == "/me/drive/root"
    assert graph_sub.change_type == "updated"
    assert graph_sub.notification_url == "https://connector.example.test/api/notifications"
    assert graph_sub.lifecycle_notification_url == "https://connector.example.test/api/lifecycle"
    lifetime = graph_sub.expires_at - services.clock.now()
    assert DRIVE_MAXIMUM - dt.timedelta(hours=1) < lifetime < DRIVE_MAXIMUM
    [stored] = services.subscriptions.for_account(account_id)
    assert stored.subscription_id == graph_sub.id
    assert (stored.resource, stored.change_type, stored.status) == ("/me/drive/root", "updated", SubscriptionStatus.ACTIVE)
    assert stored.expires_at == graph_sub.expires_at
    # clientState issued exactly as for mail: signed for the account, its nonce recorded.
    claim = read_client_state(services.settings.client_state_key, graph_sub.client_state)
    assert claim is not None and claim.account_id == account_id
    assert stored.client_state_nonce == claim.nonce
    assert stored.client_state_key_id == key_id(services.settings.client_state_key)
    assert stored.immutable_ids is False  # Outlook's notion; drive item ids never change
    assert is_current(services, stored)
    assert result.subscription is None and result.subscriptions == (stored,)
    assert result.account.status == AccountStatus.ACTIVE
    assert queued_jobs(services) == [{"v": 1, "accountId": account_id, "reason": "connect", "resource": "drive"}]


@pytest.mark.parametrize("scope", ["Files.Read", "Files.ReadWrite", "Files.Read.All", "Files.ReadWrite.All"])
def test_every_files_scope_gets_a_drive_subscription(scope):
    services = services_asking(f"User.Read {scope}")
    account_id = sign_in(services).account.account_id
    assert [s.resource for s in services.graph.for_account(account_id)] == ["/me/drive/root"]


def test_mail_and_files_get_one_subscription_each_and_a_first_round_each():
    services = services_asking("User.Read Mail.Read Files.Read")

    result = sign_in(services)

    account_id = result.account.account_id
    assert sorted(s.resource for s in services.graph.for_account(account_id)) == [
        "/me/drive/root",
        "/me/mailFolders('inbox')/messages",
    ]
    assert [s.resource for s in result.subscriptions] == ["/me/mailFolders('inbox')/messages", "/me/drive/root"]
    assert result.subscription is not None and result.subscription.resource == "/me/mailFolders('inbox')/messages"
    assert result.subscription.immutable_ids is True
    assert queued_jobs(services) == [
        {"v": 1, "accountId": account_id, "reason": "connect"},
        {"v": 1, "accountId": account_id, "reason": "connect", "resource": "drive"},
    ]


def test_a_mail_only_grant_gets_no_drive_subscription():
    services = services_asking("User.Read Mail.Read")
    account_id = sign_in(services).account.account_id
    assert [s.resource for s in services.graph.for_account(account_id)] == ["/me/mailFolders('inbox')/messages"]
    assert all("resource" not in job for job in queued_jobs(services))


def test_a_reconnect_renews_the_drive_subscription_in_place():
    services = services_asking("User.Read Files.ReadWrite.All")
    first = sign_in(services)
    services.clock.advance(days=3)

    second = sign_in(services)

    assert second.reconnected
    [graph_sub] = services.graph.for_account(first.account.account_id)
    assert graph_sub.id == first.subscriptions[0].subscription_id == second.subscriptions[0].subscription_id
    assert graph_sub.expires_at == DRIVE.expiry(services.clock.now())
    [stored] = services.subscriptions.for_account(first.account.account_id)
    assert stored.last_renewed_at == services.clock.now()


def test_a_files_only_account_signing_in_again_after_reauth_goes_on_from_its_drive_link():
    services = services_asking("User.Read Files.ReadWrite.All")
    first = sign_in(services).account
    link = "https://graph.microsoft.com/v1.0/me/drive/root/delta?token=kept"
    services.folder_deltas.save(DRIVE.sync_key(first.account_id), DRIVE_LINK_KEY, link, first.connected_at)
    waiting = services.accounts.get(first.account_id)
    waiting.status = AccountStatus.REAUTH_REQUIRED  # its refresh token died
    services.accounts.save(waiting)
    services.clock.advance(hours=5)

    second = sign_in(services).account

    # The files changed while it waited are published by the next round, from the kept link.
    assert second.connected_at == first.connected_at
    assert drive_delta_link(services, second) == link


def test_a_files_only_account_signing_in_again_after_a_disconnect_starts_afresh():
    services = services_asking("User.Read Files.ReadWrite.All")
    first = sign_in(services).account
    services.folder_deltas.save(DRIVE.sync_key(first.account_id), DRIVE_LINK_KEY, "https://kept", first.connected_at)
    disconnect_account(services, first.account_id)
    services.clock.advance(hours=5)

    second = sign_in(services).account

    assert second.connected_at == services.clock.now()
    assert drive_delta_link(services, second) is None


def test_a_drive_subscription_graph_forgot_is_recreated_on_reconnect():
    services = services_asking("User.Read Files.ReadWrite.All")
    first = sign_in(services)
    gone = first.subscriptions[0].subscription_id
    del services.graph.subscriptions[gone]

    second = sign_in(services)

    [graph_sub] = services.graph.for_account(first.account.account_id)
    assert graph_sub.id != gone and graph_sub.resource == "/me/drive/root"
    assert [s.subscription_id for s in services.subscriptions.for_account(first.account.account_id)] == [graph_sub.id]
    assert second.subscriptions[0].subscription_id == graph_sub.id


def test_a_409_for_the_drive_deletes_the_recorded_one_and_creates_again():
    services = services_asking("User.Read Files.ReadWrite.All")
    account = sign_in(services).account
    [lost] = services.subscriptions.for_account(account.account_id)
    # Recorded as failed: it is discarded, but Graph refuses the delete for now and keeps
    # it, so the creation gets 409; the recorded one is deleted again, and creation retried.
    lost.status = SubscriptionStatus.FAILED
    services.subscriptions.save(lost)
    services.graph.fail["delete_subscription"] = [GraphError(503, "ServiceUnavailable", "later")]

    made = ensure_subscription(services, account, GraphAuth(account.account_id, "token"), DRIVE)

    [graph_sub] = services.graph.for_account(account.account_id)
    assert made.subscription_id == graph_sub.id != lost.subscription_id
    assert [m for m, _ in services.graph.calls].count("create_subscription") == 3  # connect, 409, again
    assert [s.subscription_id for s in subscriptions_of(services, account.account_id, DRIVE)] == [graph_sub.id]


def test_a_refused_drive_subscription_keeps_the_mail_one_and_leaves_the_account_in_error():
    services = services_asking("User.Read Mail.Read Files.Read")
    original = services.graph.create_subscription
    calls = []

    def create(auth, **kwargs):
        calls.append(kwargs["resource"])
        if kwargs["resource"] == "/me/drive/root":
            raise GraphError(403, "ExtensionError", "The caller does not have access to the resource.")
        return original(auth, **kwargs)

    services.graph.create_subscription = create

    with pytest.raises(GraphError):
        sign_in(services)

    [account] = [services.accounts.get(a) for a in services.accounts.items]
    assert calls == ["/me/mailFolders('inbox')/messages", "/me/drive/root"]
    assert [s.resource for s in services.graph.for_account(account.account_id)] == ["/me/mailFolders('inbox')/messages"]
    assert account.status == AccountStatus.ERROR and "drive subscription failed" in account.last_error
    # The mail subscription's first round is queued all the same; the drive's is not.
    assert queued_jobs(services) == [{"v": 1, "accountId": account.account_id, "reason": "connect"}]


def test_disconnect_removes_the_drive_subscription_with_the_mail_one():
    services = services_asking("User.Read Mail.Read Files.ReadWrite.All")
    account_id = sign_in(services).account.account_id
    assert len(services.graph.for_account(account_id)) == 2

    disconnect_account(services, account_id)

    assert services.graph.for_account(account_id) == []
    assert services.subscriptions.for_account(account_id) == []
    assert subscriptions_of(services, account_id, DRIVE) == subscriptions_of(services, account_id, MAIL) == []
