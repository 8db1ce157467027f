"""clientState: issued with a key id and a nonce, verified without ever raising (shared/client_state.py)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from shared.client_state import MAX_LENGTH, issue_client_state, key_id, read_client_state, verify_client_state
from shared.config import Settings
from shared.webhook import read_notification_batch
from tests.unit.pipeline_fakes import SUB_1, notification
from tests.unit.test_config import EXAMPLE

OLD_KEY = b"the-key-before-the-rotation-0123456789"
NEW_KEY = b"the-key-after-the-rotation-9876543210ab"
ADELE = "00000000-0000-0000-66f3-3332eca7ea81.9188040d-6c67-4c5b-b112-36a304b66dad"


def legacy_client_state(key: bytes, account_id: str, nonce: str = "bm9uY2Utbm9u") -> str:
    """A clientState as subscriptions created before key ids existed carry it (v1)."""
    digest = hmac.new(key, f"v1|{account_id}|{nonce}".encode(), hashlib.sha256).digest()[:16]
    return f"v1.{account_id}.{nonce}.{base64.urlsafe_b64encode(digest).rstrip(b'=').decode()}"


@pytest.mark.parametrize(
    "client_state",
    [
        "v1.\ud800.abc.def",
        "v2.\udfff.adele.nonce.mac",
        "v1.adele-oid.tenant-1.n\u00f6nce.AAAAAAAAAAAAAAAAAAAAAA",
        "v1.adele-oid.tenant-1.nonce.\uff21\uff21\uff21",
        "v1.adele\x00oid.tenant-1.nonce.AAAA",
        "v1.adele oid.tenant-1.nonce.AAAA",
        "v1...",
        "v2.....",
        "v2",
        "",
        ".",
        "v3.abcdef.adele-oid.tenant-1.nonce.AAAAAAAAAAAAAAAAAAAAAA",
    ],
)
def test_a_malformed_or_non_ascii_clientstate_is_not_ours_and_never_raises(client_state: str) -> None:
    assert read_client_state(NEW_KEY, client_state) is None
    assert verify_client_state([NEW_KEY, OLD_KEY], client_state) is None


def test_a_lone_surrogate_clientstate_is_a_counted_drop_not_an_error() -> None:
    item = notification(ADELE, SUB_1, clientState="v1.\ud800.abc.def")
    batch = read_notification_batch(json.dumps({"value": [item]}).encode(), NEW_KEY)
    assert (batch.accepted, batch.dropped, batch.messages) == (0, 1, [])


def test_an_issued_clientstate_names_its_key_its_account_and_its_nonce_within_graphs_limit() -> None:
    value = issue_client_state(NEW_KEY, ADELE, "bm9uY2Utbm9u")
    assert len(value) <= MAX_LENGTH
    claim = read_client_state(NEW_KEY, value)
    assert claim is not None
    assert (claim.account_id, claim.nonce, claim.key_id) == (ADELE, "bm9uY2Utbm9u", key_id(NEW_KEY))
    assert NEW_KEY.decode() not in value


def test_each_subscription_gets_its_own_nonce() -> None:
    first, second = (read_client_state(NEW_KEY, issue_client_state(NEW_KEY, ADELE)) for _ in range(2))
    assert first is not None and second is not None and first.nonce != second.nonce


def test_a_clientstate_signed_with_the_previous_key_is_accepted_during_a_rotation_only() -> None:
    signed_before = issue_client_state(OLD_KEY, ADELE)
    assert verify_client_state([NEW_KEY, OLD_KEY], signed_before) == ADELE
    assert verify_client_state([NEW_KEY], signed_before) is None


def test_a_changed_key_id_does_not_let_another_key_verify_it() -> None:
    signed = issue_client_state(OLD_KEY, ADELE)
    relabelled = signed.replace(key_id(OLD_KEY), key_id(NEW_KEY), 1)
    assert verify_client_state([NEW_KEY, OLD_KEY], relabelled) is None


def test_a_legacy_clientstate_without_a_key_id_is_accepted_under_either_key() -> None:
    assert verify_client_state([NEW_KEY, OLD_KEY], legacy_client_state(OLD_KEY, ADELE)) == ADELE
    assert verify_client_state([NEW_KEY, OLD_KEY], legacy_client_state(NEW_KEY, ADELE)) == ADELE
    claim = read_client_state(NEW_KEY, legacy_client_state(NEW_KEY, ADELE))
    assert claim is not None and claim.key_id is None and claim.nonce == "bm9uY2Utbm9u"
    assert verify_client_state([NEW_KEY], legacy_client_state(b"x" * 40, ADELE)) is None


def test_an_account_id_that_cannot_fit_is_refused_at_issue() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        issue_client_state(NEW_KEY, "a" * 120)


def test_the_webhook_accepts_both_keys_of_the_settings() -> None:
    settings = Settings.from_env({**EXAMPLE, "CLIENT_STATE_KEY": NEW_KEY.decode(),
                                  "CLIENT_STATE_KEY_PREVIOUS": OLD_KEY.decode()})
    items = [notification(ADELE, SUB_1, clientState=issue_client_state(k, ADELE)) for k in (NEW_KEY, OLD_KEY)]
    batch = read_notification_batch(json.dumps({"value": items}).encode(), settings.client_state_keys)
    assert (batch.accepted, batch.dropped) == (2, 0)
    alone = Settings.from_env({**EXAMPLE, "CLIENT_STATE_KEY": NEW_KEY.decode()})
    batch = read_notification_batch(json.dumps({"value": items}).encode(), alone.client_state_keys)
    assert (batch.accepted, batch.dropped) == (1, 1)


@pytest.mark.parametrize(
    ("value", "message"),
    [("short", "at least 32"), ("@Microsoft.KeyVault(SecretUri=https://kv/secrets/x)", "did not resolve")],
)
def test_a_bad_previous_key_stops_the_app_at_start_naming_it(value: str, message: str) -> None:
    from shared.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=f"CLIENT_STATE_KEY_PREVIOUS.*{message}"):
        Settings.from_env({**EXAMPLE, "CLIENT_STATE_KEY_PREVIOUS": value})
