"""The subscription's clientState nonce and key id survive Table Storage (real Azurite)."""

from __future__ import annotations

import datetime as dt
import uuid

from shared.adapters.tables import TableSubscriptionStore
from shared.models import Subscription


def _subscription(**fields: object) -> Subscription:
    return Subscription(
        subscription_id=str(uuid.uuid4()),
        account_id=f"{uuid.uuid4()}.tenant",
        resource="/me/mailFolders('inbox')/messages",
        change_type="created,updated,deleted",
        expires_at=dt.datetime(2026, 12, 5, 10, tzinfo=dt.UTC),
        **fields,  # type: ignore[arg-type]
    )


def test_the_nonce_and_key_id_are_read_back_from_the_record_and_the_index(azurite) -> None:  # type: ignore[no-untyped-def]
    store = TableSubscriptionStore(azurite.connection_string)
    saved = store.save(_subscription(client_state_nonce="bm9uY2Utbm9u", client_state_key_id="AbC-_1"))
    read = store.get(saved.account_id, saved.subscription_id)
    assert read is not None
    assert (read.client_state_nonce, read.client_state_key_id) == ("bm9uY2Utbm9u", "AbC-_1")
    [listed] = [s for s in store.expiring_before(dt.datetime(2026, 12, 6, tzinfo=dt.UTC))
                if s.subscription_id == saved.subscription_id]
    assert listed.client_state_nonce == "bm9uY2Utbm9u"


def test_a_record_written_before_nonces_were_kept_reads_as_unknown(azurite) -> None:  # type: ignore[no-untyped-def]
    store = TableSubscriptionStore(azurite.connection_string)
    saved = store.save(_subscription())
    read = store.get(saved.account_id, saved.subscription_id)
    assert read is not None and read.client_state_nonce is None and read.client_state_key_id is None
