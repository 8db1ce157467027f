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

The lease is also the *fence* of every write a round makes: marks and the round's progress
(the next page's link, so that a round too long for one invocation resumes in the next)
are written in entity-group transactions that carry the lease row under its ETag. A
holder whose lease was taken over (it went stale during a long Graph call, or a disconnect
seized it) gets ``LeaseLostError`` and has written nothing. Each takeover raises the
lease's generation, so the log tells which holder a write came from.

Sizing (100,000 mailboxes): one table partition per account, point reads by message,
one small entity per published message; no scan except the rare full round after 410.
"""

from __future__ import annotations

from shared.errors import ConcurrencyError

# The port is named with the others in ``shared.ports`` (defined in ``shared.mail_ports``);
# re-exported for the sync's readers.
from shared.ports import LedgerMark, MailLedger, SyncProgress

LEDGER_TABLE = "mailledger"


class LeaseLostError(ConcurrencyError):
    """Another worker (or a disconnect) took over the account's sync lease: stop, write nothing."""


__all__ = ["LEDGER_TABLE", "LeaseLostError", "LedgerMark", "MailLedger", "SyncProgress"]
