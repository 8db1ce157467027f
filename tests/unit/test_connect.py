"""Connect, reconnect, disconnect and the inbox subscription, over fakes of every port."""

from __future__ import annotations

import datetime as dt

import pytest

from shared.accounts import list_accounts, show_account
from shared.client_state import verify_client_state
from shared.connect import (
    complete_connect,
    complete_device_connect,
    disconnect_account,
    start_connect,
    start_device_connect,
)
from shared.errors import AuthFlowError, GraphError, InvalidInputError, NotFoundError, PersistenceError
from shared.models import AccountStatus, ClientKind, SubscriptionStatus
from shared.subscriptions import (
    MAILBOX_CHANGE_TYPES,
    MAILBOX_RESOURCE,
    MAX_MAIL_SUBSCRIPTION_LIFETIME,
    ensure_mailbox_subscription,
    parse_graph_datetime,
)
from shared.tokens import token_cache_secret_name
from tests.fakes import FakeSubscriptionStore, FakeUser, make_services
from tests.unit.pipeline_fakes import run_queued_rounds

# The browser-binding cookie's value a test browser carries.
BROWSER = "b" * 43


@pytest.fixture
def services():
    return make_services()


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    monkeypatch.setattr("shared.subscriptions.VALIDATION_RETRY_DELAY_SECONDS", 0)


def sign_in(services, login_hint=None, **response):
    """What the browser does: start, consent at Microsoft, come back with code and state."""
    user = services.identity.next_user
    services.graph.users.setdefault(
        user.account_id,
        {"id": user.object_id, "userPrincipalName": user.username, "displayName": user.display_name},
    )
    start_connect(services, login_hint, browser_binding=BROWSER)
    flow = services.identity.started[-1]
    answer = {"state": flow["state"], "code": f"code-for-{flow['state']}", **response}
    return complete_connect(services, {k: v for k, v in answer.items() if v is not None}, browser_binding=BROWSER)


# -- start -------------------------------------------------------------------------------


def test_start_keeps_the_whole_flow_under_its_state_for_ten_minutes(services):
    url = start_connect(services, "adele@contoso.test", browser_binding=BROWSER)
    flow = services.identity.started[-1]
    pending = services.authflows.items[flow["state"]]
    assert url == flow["auth_uri"]
    assert pending.flow == flow
    assert pending.expires_at == services.clock.now() + dt.timedelta(minutes=10)
    assert flow["login_hint"] == "adele@contoso.test"
    assert flow["redirect_uri"] == "https://connector.example.test/api/auth/callback"
    assert flow["scope"] == ["User.Read", "Mail.Read"]


@pytest.mark.parametrize("hint", ["x" * 300, "adele@contoso.test\r\nX-Injected: 1"])
def test_start_refuses_an_unreasonable_login_hint(services, hint):
    with pytest.raises(InvalidInputError):
        start_connect(services, hint, browser_binding=BROWSER)


def test_a_blank_login_hint_is_no_hint(services):
    start_connect(services, "  ", browser_binding=BROWSER)
    assert services.identity.started[-1]["login_hint"] is None


# -- callback ----------------------------------------------------------------------------


def test_connect_creates_the_account_its_token_cache_and_its_inbox_subscription(services):
    result = sign_in(services)
    account = result.account
    user = services.identity.next_user

    assert not result.reconnected
    assert account.account_id == f"{user.object_id}.{user.tenant_id}"
    assert account.status == AccountStatus.ACTIVE
    assert account.tenant_id == user.tenant_id and account.user_id == user.object_id
    assert account.client_kind == ClientKind.CONFIDENTIAL
    assert services.secrets.get(token_cache_secret_name(account.account_id))

    [graph_sub] = services.graph.for_account(account.account_id)
    assert graph_sub.resource == MAILBOX_RESOURCE == "/me/mailFolders('inbox')/messages"
    assert graph_sub.change_type == MAILBOX_CHANGE_TYPES == "created,updated,deleted"
    assert graph_sub.notification_url == "https://connector.example.test/api/notifications"
    assert graph_sub.lifecycle_notification_url == "https://connector.example.test/api/lifecycle"
    key = services.settings.client_state_key
    assert verify_client_state(key, graph_sub.client_state) == account.account_id
    lifetime = graph_sub.expires_at - services.clock.now()
    assert MAX_MAIL_SUBSCRIPTION_LIFETIME - dt.timedelta(hours=1) < lifetime < MAX_MAIL_SUBSCRIPTION_LIFETIME

    [stored] = services.subscriptions.for_account(account.account_id)
    assert stored.subscription_id == graph_sub.id == result.subscription.subscription_id
    assert stored.status == SubscriptionStatus.ACTIVE


def test_connect_queues_the_first_round_which_records_the_delta_link_without_history(services):
    result = sign_in(services)
    account_id = result.account.account_id
    # The callback itself walks no mailbox: the first round is queued.
    assert ("delta_page", account_id) not in services.graph.calls
    assert len(services.queues.sent["mail-sync"]) == 1
    run_queued_rounds(services)
    assert services.accounts.get(account_id).delta_link
    assert services.queues.sent.get("mail-events", []) == []


def test_reconnect_updates_the_account_in_place_and_never_duplicates(services):
    first = sign_in(services).account
    stored = services.accounts.get(first.account_id)
    stored.status = AccountStatus.REAUTH_REQUIRED
    stored.last_error = "sign-in required (invalid_grant)"
    services.accounts.save(stored)

    second = sign_in(services)

    assert second.reconnected
    assert second.account.account_id == first.account_id
    assert second.account.status == AccountStatus.ACTIVE
    assert second.account.last_error is None
    assert len(services.accounts.items) == 1
    assert len(services.graph.for_account(first.account_id)) == 1
    assert len(services.subscriptions.for_account(first.account_id)) == 1


def test_reconnect_replaces_a_subscription_graph_no_longer_knows(services):
    first = sign_in(services)
    services.graph.subscriptions.clear()  # Graph removed it (subscriptionRemoved)

    second = sign_in(services)

    [graph_sub] = services.graph.for_account(first.account.account_id)
    assert graph_sub.id != first.subscription.subscription_id
    [stored] = services.subscriptions.for_account(first.account.account_id)
    assert stored.subscription_id == graph_sub.id == second.subscription.subscription_id


def test_a_recorded_subscription_marked_removed_is_replaced(services):
    first = sign_in(services)
    stored = services.subscriptions.get(first.account.account_id, first.subscription.subscription_id)
    stored.status = SubscriptionStatus.REMOVED
    services.subscriptions.save(stored)

    second = sign_in(services)

    assert second.subscription.subscription_id != first.subscription.subscription_id
    assert [s.id for s in services.graph.for_account(first.account.account_id)] == [
        second.subscription.subscription_id
    ]


def test_a_subscription_graph_could_not_delete_stays_recorded_and_a_409_deletes_it(services):
    first = sign_in(services)
    account_id = first.account.account_id
    broken = services.subscriptions.for_account(account_id)[0]
    broken.status = SubscriptionStatus.FAILED
    services.subscriptions.save(broken)
    services.graph.fail["delete_subscription"] = [GraphError(503, "ServiceUnavailable", "busy")]

    result = ensure_mailbox_subscription(
        services, services.accounts.get(account_id), services.tokens.graph_auth(first.account)
    )

    assert [s.id for s in services.graph.for_account(account_id)] == [result.subscription_id]
    assert [s.subscription_id for s in services.subscriptions.for_account(account_id)] == [
        result.subscription_id
    ]


def test_a_409_for_a_subscription_nobody_recorded_leaves_the_account_in_error(services):
    first = sign_in(services)
    account_id = first.account.account_id
    services.subscriptions.delete(account_id, first.subscription.subscription_id)

    with pytest.raises(GraphError) as raised:
        sign_in(services)

    assert raised.value.status == 409
    assert services.accounts.get(account_id).status == AccountStatus.ERROR


def test_a_subscription_that_cannot_be_recorded_is_deleted_in_graph_again(services):
    class BrokenStore(FakeSubscriptionStore):
        def save(self, subscription):
            raise PersistenceError("table unavailable")

    services.__dict__["subscriptions"] = BrokenStore()
    with pytest.raises(PersistenceError):
        sign_in(services)
    account_id = services.identity.next_user.account_id
    assert services.graph.for_account(account_id) == []
    assert services.accounts.get(account_id).status == AccountStatus.ERROR


def validation_failure() -> GraphError:
    return GraphError(400, "ValidationError", "Subscription validation request failed.")


def test_a_missed_validation_handshake_is_tried_again(services):
    services.graph.fail["create_subscription"] = [validation_failure(), validation_failure()]
    result = sign_in(services)
    assert result.account.status == AccountStatus.ACTIVE
    assert len(services.graph.for_account(result.account.account_id)) == 1


def test_a_failed_subscription_leaves_the_account_in_error_with_the_reason(services):
    services.graph.fail["create_subscription"] = [validation_failure() for _ in range(3)]
    with pytest.raises(GraphError):
        sign_in(services)
    stored = services.accounts.get(services.identity.next_user.account_id)
    assert stored.status == AccountStatus.ERROR
    assert "validation request failed" in stored.last_error


def test_other_graph_refusals_are_not_tried_again(services):
    services.graph.fail["create_subscription"] = [GraphError(403, "Forbidden", "Insufficient privileges")]
    with pytest.raises(GraphError):
        sign_in(services)
    assert [c for c, _ in services.graph.calls].count("create_subscription") == 1


def test_an_unknown_state_is_refused(services):
    with pytest.raises(AuthFlowError) as raised:
        complete_connect(services, {"state": "forged", "code": "code-for-forged"}, browser_binding=BROWSER)
    assert raised.value.error == "unknown_state"


def test_a_replayed_state_is_refused(services):
    start_connect(services, browser_binding=BROWSER)
    state = services.identity.started[-1]["state"]
    complete_connect(services, {"state": state, "code": f"code-for-{state}"}, browser_binding=BROWSER)
    with pytest.raises(AuthFlowError) as raised:
        complete_connect(services, {"state": state, "code": f"code-for-{state}"}, browser_binding=BROWSER)
    assert raised.value.error == "unknown_state"
    assert len(services.accounts.items) == 1


def test_an_expired_state_is_refused_and_consumed(services):
    start_connect(services, browser_binding=BROWSER)
    state = services.identity.started[-1]["state"]
    services.clock.advance(minutes=10, seconds=1)
    with pytest.raises(AuthFlowError) as raised:
        complete_connect(services, {"state": state, "code": f"code-for-{state}"}, browser_binding=BROWSER)
    assert raised.value.error == "expired_state"
    assert state not in services.authflows.items


def test_a_missing_state_or_code_is_refused(services):
    with pytest.raises(AuthFlowError):
        complete_connect(services, {"code": "x"}, browser_binding=BROWSER)
    start_connect(services, browser_binding=BROWSER)
    state = services.identity.started[-1]["state"]
    with pytest.raises(AuthFlowError) as raised:
        complete_connect(services, {"state": state}, browser_binding=BROWSER)
    assert raised.value.error == "missing_code"


def test_an_error_from_microsoft_is_reported_and_the_state_used_up(services):
    start_connect(services, browser_binding=BROWSER)
    state = services.identity.started[-1]["state"]
    with pytest.raises(AuthFlowError) as raised:
        complete_connect(
            services,
            {
                "state": state,
                "error": "access_denied",
                "error_description": "AADSTS65004: User declined to consent.",
            }, browser_binding=BROWSER,
        )
    assert raised.value.error == "access_denied"
    assert "declined" in raised.value.description
    assert state not in services.authflows.items
    assert services.accounts.items == {}


def test_a_code_microsoft_refuses_is_an_auth_flow_error(services):
    services.identity.redeem_error = "invalid_grant"
    with pytest.raises(AuthFlowError) as raised:
        sign_in(services)
    assert raised.value.error == "invalid_grant"
    assert services.accounts.items == {}


def test_two_users_get_two_accounts(services):
    sign_in(services)
    services.identity.next_user = FakeUser("oid-megan", "tenant-2", "megan@contoso.test", "Megan Bowen")
    sign_in(services)
    assert len(services.accounts.items) == 2
    assert len(services.graph.subscriptions) == 2


# -- device code -------------------------------------------------------------------------


def test_the_device_code_flow_connects_a_public_client_account(services):
    flow = start_device_connect(services)
    assert "ABCD-EFGH" in flow["message"]
    result = complete_device_connect(services, flow)
    assert result.account.client_kind == ClientKind.PUBLIC
    assert services.graph.for_account(result.account.account_id)


# -- disconnect --------------------------------------------------------------------------


def test_disconnect_removes_subscription_and_secret_and_keeps_the_account(services):
    result = sign_in(services)
    account_id = result.account.account_id

    account = disconnect_account(services, account_id)

    assert account.status == AccountStatus.DISCONNECTED
    assert services.graph.for_account(account_id) == []
    assert services.subscriptions.for_account(account_id) == []
    assert services.secrets.get(token_cache_secret_name(account_id)) is None
    assert services.accounts.get(account_id).delta_link is None


def test_disconnect_is_idempotent(services):
    account_id = sign_in(services).account.account_id
    disconnect_account(services, account_id)
    again = disconnect_account(services, account_id)
    assert again.status == AccountStatus.DISCONNECTED


def test_disconnect_of_an_unknown_account_is_not_found(services):
    with pytest.raises(NotFoundError):
        disconnect_account(services, "nobody.nowhere")


def test_disconnect_with_a_dead_refresh_token_still_forgets_the_account(services):
    account_id = sign_in(services).account.account_id
    services.tokens.forget(account_id)
    services.identity.revoke(account_id)

    account = disconnect_account(services, account_id)

    assert account.status == AccountStatus.DISCONNECTED
    assert services.subscriptions.for_account(account_id) == []
    assert services.secrets.get(token_cache_secret_name(account_id)) is None


def test_reconnect_after_disconnect_recovers_the_secret_name_and_subscribes_again(services):
    account_id = sign_in(services).account.account_id
    disconnect_account(services, account_id)
    result = sign_in(services)
    assert result.reconnected and result.account.status == AccountStatus.ACTIVE
    assert services.secrets.get(token_cache_secret_name(account_id))
    assert len(services.graph.for_account(account_id)) == 1


# -- operators' views ----------------------------------------------------------------------


def test_accounts_are_listed_page_by_page(services):
    for n in range(5):
        services.identity.next_user = FakeUser(f"oid-{n}", "tenant", f"user{n}@contoso.test")
        sign_in(services)
    first, token = list_accounts(services, size=2)
    second, token2 = list_accounts(services, size=2, continuation=token)
    third, token3 = list_accounts(services, size=2, continuation=token2)
    ids = [a["id"] for a in first + second + third]
    assert len(ids) == len(set(ids)) == 5
    assert token3 is None
    assert first[0]["status"] == "active" and first[0]["subscriptionExpiresAt"]


def test_a_page_size_out_of_range_is_refused(services):
    with pytest.raises(InvalidInputError):
        list_accounts(services, size=0)


def test_show_gives_no_token_and_no_delta_link(services):
    account_id = sign_in(services).account.account_id
    shown = show_account(services, account_id)
    assert shown["user"] == "adele@contoso.test"
    text = repr(shown)
    assert "deltaLink" not in text and "delta://" not in text and "at-" not in text


def test_graph_datetimes_with_seven_digits_parse():
    parsed = parse_graph_datetime("2026-11-27T11:30:00.1234567Z", dt.datetime.min)
    assert parsed == dt.datetime(2026, 11, 27, 11, 30, 0, 123456, tzinfo=dt.UTC)
    fallback = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert parse_graph_datetime("nonsense", fallback) == fallback


def test_a_subscription_renewed_by_someone_else_meanwhile_is_kept(services):
    first = sign_in(services)
    account_id = first.account.account_id
    store = services.subscriptions
    original_save = store.save

    def renewal_wins_the_race(subscription):
        current = store.get(subscription.account_id, subscription.subscription_id)
        original_save(current)  # the renewal timer writes first: our ETag is stale now
        store.save = original_save
        return original_save(subscription)

    store.save = renewal_wins_the_race
    result = ensure_mailbox_subscription(
        services, services.accounts.get(account_id), services.tokens.graph_auth(first.account)
    )

    assert result.subscription_id == first.subscription.subscription_id
    assert len(services.graph.for_account(account_id)) == 1


def test_a_reconnect_keeps_the_mailbox_history_going(services):
    first = sign_in(services).account
    run_queued_rounds(services)
    services.clock.advance(hours=5)
    second = sign_in(services).account
    assert second.connected_at == first.connected_at
    assert second.delta_link


def test_a_reconnect_after_a_disconnect_starts_afresh(services):
    first = sign_in(services).account
    disconnect_account(services, first.account_id)
    services.clock.advance(hours=5)
    second = sign_in(services).account
    assert second.connected_at == services.clock.now()
