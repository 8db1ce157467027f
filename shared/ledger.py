"""The mail ledger: what was already published per account, and who is syncing it now.

Delta says what changed, not whether we already told anyone: a notification replayed,
a delta round retried after a crash, or a full round after ``410 Gone`` returns messages
again. The ledger keeps, per account and message, the last published ``changeKey`` (or
that its deletion was published). From it the sync tells ``created`` (first seen) from
``updated`` (new changeKey) and publishes nothing twice.

The same partition holds a *sync lease*: one delta round per account at a time, so two
notifications handled at once neither lose nor double an event. A trigger that finds the
lease taken leaves a "pending" mark; the holder runs one more round before it lets go.
A lease not renewed for ``stale_after`` (a worker that died) can be taken over.

Sizing (100,000 mailboxes): one table partition per account, point reads by message,
one small entity per published message; no scan except the rare full round after 410.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

LEDGER_TABLE = "mailledger"


@dataclass(frozen=True)
class LedgerMark:
    message_id: str
    change_key: str | None
    removed: bool = False


class MailLedger(Protocol):
    def marks(self, account_id: str, message_ids: Sequence[str]) -> dict[str, LedgerMark]:
        """The marks of those messages that have one."""
        ...

    def record(self, account_id: str, marks: Sequence[LedgerMark]) -> None:
        """Insert or replace the marks."""
        ...

    def live_message_ids(self, account_id: str) -> Iterator[str]:
        """Ids of the messages published and not (yet) published as deleted."""
        ...

    def forget_account(self, account_id: str) -> None:
        """Drop the account's marks and lease (on disconnect); idempotent."""
        ...

    def acquire_lease(
        self, account_id: str, holder: str, now: dt.datetime, stale_after: dt.timedelta
    ) -> bool:
        """Take the account's sync lease; when someone else holds a live one, mark work as
        pending for them and return False."""
        ...

    def renew_lease(self, account_id: str, holder: str, now: dt.datetime) -> bool:
        """Keep the lease; False when it was taken over (stop without writing)."""
        ...

    def release_lease(self, account_id: str, holder: str, *, abandon: bool = False) -> bool:
        """Let go of the lease. False (lease kept, pending cleared) when work arrived in the
        meantime and another round must run, unless ``abandon`` (after a failure)."""
        ...
