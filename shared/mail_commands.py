"""The command queue: consumers act on mail from queue ``mail-commands``, outcomes go to
``mail-command-results``.

A command is JSON (as sent, or base64 of it)::

    {"id", "accountId", "messageId", "action": "move"|"delete"|"permanentDelete"|
     "markRead"|"markUnread"|"categorize"|"flag", "destination"?, "categories"?, "flag"?}

Each outcome is one CloudEvent of type ``com.m365connector.command.succeeded`` or
``.failed`` with ``data {commandId, accountId, messageId, action, error?}`` (``error``:
``{code, message}``, the codes of the HTTP routes).

**At most once.** Table ``mailcommands`` holds one record per command id ever seen for an
account (the account's commands share a partition, so a batch's records are written in one
transaction per step): ``claimed`` (inserted before the Graph call; one of two racing deliveries wins it),
``finished`` (the result event kept), ``published`` (the result sent). A command whose id
is known does nothing again: a finished one only has its kept result sent (a crash came
between the two), a published one nothing at all. A claim found on a redelivery of the
message (or older than ``CLAIM_STALE_AFTER``) belonged to a delivery that died after
claiming: the command may or may not have run, so it is not run again and its result says
``interrupted``. A claim that is fresh and found on a first delivery belongs to a duplicate
running right now, which publishes.

**Never a poison loop.** A command that cannot be read, or that names an unknown account,
yields a ``failed`` result with the reason and the message is done. Only a storage failure
raises, so that the queue delivers the message again (claims taken before Graph was called
are given back first, so the next delivery runs those commands).

**Bulk through JSON batching.** Commands of one mailbox that arrive together (the queue
trigger runs many messages at once) are sent as one ``$batch`` of at most 20 requests
(``MailboxBatcher``): the first command of a mailbox waits for others (until 20 are
pending, none came for 15 ms, or 100 ms are over), then sends; commands that arrive
meanwhile go in the next batch. A batch holds the mailbox's 4 concurrency slots in the
Graph client; throttled requests inside a batch are sent again after their Retry-After. Two commands on one message never share a batch, so
they run in the order they came.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import threading
import time
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.config import MAIL_COMMAND_RESULT_QUEUE
from shared.errors import (
    ConcurrencyError,
    GraphError,
    InvalidInputError,
    MissingScopeError,
    NotFoundError,
    ReauthRequiredError,
    ThrottledError,
    UpstreamError,
)
from shared.mail_actions import (
    WRITE_SCOPE,
    active_account,
    require_scope,
)
from shared.mail_command_format import (
    FAILED,
    CommandFailure,
    MailCommand,
    MalformedCommandError,
    failure_of,
    parse_command,
    result_event,
)
from shared.mail_command_format import encode as _encode
from shared.models import Account
from shared.ports import (
    MAX_BATCH_REQUESTS,
    BatchResponse,
    CommandRecord,
    CommandState,
)

if TYPE_CHECKING:
    from shared.bootstrap import Services

log = logging.getLogger(__name__)

# Longer than the function timeout (host.json: 10 minutes): the claimer is gone for sure.
CLAIM_STALE_AFTER = dt.timedelta(minutes=15)
BATCH_LINGER_SECONDS = 0.1
BATCH_IDLE_SECONDS = 0.015
# How long a command's record is kept (``prune_command_log``): longer than a queue message
# lives by default (7 days), so a command sent twice within a message's life, or delivered
# again by the queue, still runs once. The same id sent again after this runs again.
COMMAND_RECORD_RETENTION = dt.timedelta(days=8)


def prune_command_log(services: Services) -> int:
    """Delete command records past their retention (the daily ``purge_mail_commands``
    timer): the table would otherwise grow by one row per command for ever."""
    pruned = services.command_log.prune(services.clock.now() - COMMAND_RECORD_RETENTION)
    log.info("mail command log: %d record(s) older than %d days deleted", pruned, COMMAND_RECORD_RETENTION.days)
    return pruned


# --- one queue message ------------------------------------------------------------------------


@dataclass(frozen=True)
class CommandOutcome:
    command_id: str | None
    published: str | None  # SUCCEEDED, FAILED, or None when nothing was sent (a duplicate)
    note: str = ""  # duplicate, in_progress, interrupted, republished, throttled, finished_elsewhere


def handle_command(services: Services, body: bytes | str, *, redelivered: bool = False) -> CommandOutcome:
    """Run one command from the queue at most once and publish its result.

    ``redelivered``: the queue has handed this message out before (its dequeue count is
    over 1), so a claim on its id is one a dead delivery left. Storage failures raise."""
    try:
        command = parse_command(body)
    except MalformedCommandError as error:
        return _refuse_malformed(services, body, error, services.clock.now())
    return mailbox_batcher(services).submit(command, redelivered=redelivered)


def _refuse_malformed(
    services: Services, body: bytes | str, error: MalformedCommandError, now: dt.datetime
) -> CommandOutcome:
    raw = body.encode("utf-8", "replace") if isinstance(body, str) else bytes(body)
    fallback = "malformed-" + hashlib.sha256(raw).hexdigest()[:32]
    command_id = error.known.get("id")
    log.warning("a command was refused: %s", error)
    event = result_event(error.known, failure_of(error), now, fallback_id=fallback)
    if not isinstance(command_id, str):
        _send(services, _encode(event))
        return CommandOutcome(None, FAILED)
    account_id = str(error.known.get("accountId") or "")
    record = services.command_log.claim(account_id, [command_id], now).get(command_id)
    if record is None:
        return CommandOutcome(command_id, None, "duplicate")
    return _finish(services, [(record, event)])[0]


def _seen_before(services: Services, command: MailCommand, redelivered: bool, now: dt.datetime) -> CommandOutcome:
    record = services.command_log.get(command.account_id, command.id)
    if record is None:
        # Released (it was throttled) between a claim and this read: the next delivery runs it.
        raise ConcurrencyError(f"command {command.id} was released while it was read")
    if record.state == CommandState.PUBLISHED:
        log.info("command %s was run before: nothing to do", command.id)
        return CommandOutcome(command.id, None, "duplicate")
    if record.state == CommandState.FINISHED and record.result is not None:
        _send(services, record.result)
        _mark_published(services, [record])
        outcome = json.loads(record.result)["type"].rsplit(".", 1)[1]
        return CommandOutcome(command.id, outcome, "republished")
    if not redelivered and now - record.claimed_at < CLAIM_STALE_AFTER:
        log.info("command %s is being run by another delivery", command.id)
        return CommandOutcome(command.id, None, "in_progress")
    log.warning("command %s was claimed by a delivery that did not finish: not run again", command.id)
    failure = CommandFailure(
        "interrupted", "the command was interrupted and may or may not have been applied; it is not run again"
    )
    [outcome] = _finish(services, [(record, result_event(command.fields(), failure, now))])
    return CommandOutcome(command.id, outcome.published, "interrupted" if outcome.published else outcome.note)


def _finish(services: Services, done: list[tuple[CommandRecord, dict[str, Any]]]) -> list[CommandOutcome]:
    """Keep each result with its record, send it, then mark the record published: a crash
    between two steps leaves a record the next delivery knows what to do with."""
    for record, event in done:
        record.state = CommandState.FINISHED
        record.result = _encode(event)
    saved = {r.command_id for r in services.command_log.save([r for r, _ in done])}
    outcomes: list[CommandOutcome] = []
    published: list[CommandRecord] = []
    for record, event in done:
        if record.command_id not in saved:
            # Another delivery finished it meanwhile (declared it interrupted): that one publishes.
            log.warning("command %s was finished by another delivery", record.command_id)
            outcomes.append(CommandOutcome(record.command_id, None, "finished_elsewhere"))
            continue
        published.append(record)
        outcomes.append(CommandOutcome(record.command_id, event["type"].rsplit(".", 1)[1]))
    _send_all(services, [r.result or "" for r in published])
    _mark_published(services, published)
    return outcomes


def _mark_published(services: Services, records: list[CommandRecord]) -> None:
    for record in records:
        record.state = CommandState.PUBLISHED
    if records and len(services.command_log.save(records)) < len(records):
        # Harmless: a later delivery of such a command would send its kept result once more.
        log.warning("%d command records could not be marked published", len(records))


def _send(services: Services, event: str) -> None:
    services.queues.send(MAIL_COMMAND_RESULT_QUEUE, [event])


_senders = ThreadPoolExecutor(max_workers=MAX_BATCH_REQUESTS, thread_name_prefix="mail-command-results")


def _send_all(services: Services, events: list[str]) -> None:
    """The results of a batch, sent side by side (a queue takes one message per request)."""
    if len(events) <= 1:
        for event in events:
            _send(services, event)
        return
    for sent in [_senders.submit(_send, services, event) for event in events]:
        sent.result()


# --- JSON batching per mailbox ------------------------------------------------------------------


@dataclass
class _Pending:
    command: MailCommand
    redelivered: bool
    done: Future[CommandOutcome] = field(default_factory=Future)


@dataclass
class _Mailbox:
    pending: list[_Pending] = field(default_factory=list)
    sending: bool = False


class MailboxBatcher:
    """Gathers the commands of each mailbox that arrive together, and handles them a batch at
    a time: one transaction claims them, one ``$batch`` carries them to Graph, one
    transaction keeps their results, the results go out side by side, one transaction marks
    them published.

    The caller whose command finds no batch being handled for its mailbox handles the
    batches (waiting a little for a fuller one first, ``_gather``) until nothing is
    pending; the others wait for their own command's outcome."""

    def __init__(self, services: Services, *, linger: float = BATCH_LINGER_SECONDS) -> None:
        self._services = services
        self._linger = linger
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._mailboxes: dict[str, _Mailbox] = {}

    def submit(self, command: MailCommand, *, redelivered: bool = False) -> CommandOutcome:
        mine = _Pending(command, redelivered)
        with self._lock:
            mailbox = self._mailboxes.setdefault(command.account_id, _Mailbox())
            mailbox.pending.append(mine)
            lead = not mailbox.sending
            mailbox.sending = True
            self._arrived.notify_all()
        if lead:
            self._handle_all(command.account_id, mailbox)
        return mine.done.result()

    def _handle_all(self, account_id: str, mailbox: _Mailbox) -> None:
        while True:
            with self._lock:
                self._gather(mailbox)
                chosen = _take_batch(mailbox.pending)
                if not chosen:
                    mailbox.sending = False
                    self._mailboxes.pop(account_id, None)
                    return
            try:
                self._handle(account_id, chosen)
            except BaseException as error:  # noqa: BLE001 - every waiter must hear of it
                for item in chosen:
                    if not item.done.done():
                        item.done.set_exception(error if isinstance(error, Exception) else RuntimeError("stopped"))
                if not isinstance(error, Exception):
                    raise

    def _gather(self, mailbox: _Mailbox) -> None:
        """Wait (holding the lock's condition) for a fuller batch: until 20 are pending, or
        none came for ``BATCH_IDLE_SECONDS``, or ``linger`` is over. The queue hands out its
        messages several at once; with nothing pending there is nothing to wait for."""
        deadline = time.monotonic() + self._linger
        while mailbox.pending and len(mailbox.pending) < MAX_BATCH_REQUESTS:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            before = len(mailbox.pending)
            self._arrived.wait(min(left, BATCH_IDLE_SECONDS))
            if len(mailbox.pending) == before:
                return

    def _handle(self, account_id: str, chosen: list[_Pending]) -> None:
        services = self._services
        now = services.clock.now()
        claimed = services.command_log.claim(account_id, [p.command.id for p in chosen], now)
        fresh = [p for p in chosen if p.command.id in claimed]
        for item in chosen:
            if item.command.id not in claimed:
                try:
                    item.done.set_result(_seen_before(services, item.command, item.redelivered, now))
                except Exception as error:  # noqa: BLE001 - that delivery raises it
                    item.done.set_exception(error)
        if not fresh:
            return
        try:
            errors = self._carry_out(account_id, [p.command for p in fresh])
        except Exception:
            # Storage failed before Graph was called (reading the account, say): none of
            # them ran, so their claims are given back and the queue delivers them again.
            services.command_log.release([claimed[p.command.id] for p in fresh])
            raise
        throttled = [(p, e) for p, e in zip(fresh, errors, strict=True) if isinstance(e, ThrottledError)]
        if throttled:
            # Graph throttles before it runs a request: those commands did not run, and their
            # ids are given back so that the consumer can send them again.
            services.command_log.release([claimed[p.command.id] for p, _ in throttled])
            _send_all(services, [_encode(result_event(p.command.fields(), failure_of(e), now)) for p, e in throttled])
            for item, _ in throttled:
                item.done.set_result(CommandOutcome(item.command.id, FAILED, "throttled"))
        done = [(p, e) for p, e in zip(fresh, errors, strict=True) if not isinstance(e, ThrottledError)]
        for item, failed in done:
            if failed is not None:
                log.info("command %s (%s) of account %s failed: %s", item.command.id, item.command.action,
                         account_id, failure_of(failed).code)
        outcomes = _finish(services, [
            (claimed[p.command.id], result_event(p.command.fields(), failure_of(e) if e else None, now))
            for p, e in done
        ])
        for (item, _), outcome in zip(done, outcomes, strict=True):
            item.done.set_result(outcome)

    def _carry_out(self, account_id: str, commands: list[MailCommand]) -> list[Exception | None]:
        """One ``$batch`` with the commands; what each failed with (None: it succeeded)."""
        services = self._services
        try:
            account = active_account(services, account_id)  # storage failures raise from here
            require_scope(account, WRITE_SCOPE)
            auth = services.tokens.graph_auth(account)
            requests = [command.graph_request(str(n)) for n, command in enumerate(commands)]
            answers = services.mail.batch(auth, requests)
            refused = [n for n, answer in enumerate(answers) if answer.status == 401]
            if refused:
                # The cached token was refused: once more with a fresh one, for those requests.
                services.tokens.forget(account_id)
                auth = services.tokens.graph_auth(account)
                again = services.mail.batch(auth, [requests[n] for n in refused])
                for n, answer in zip(refused, again, strict=True):
                    answers[n] = answer
        except (InvalidInputError, NotFoundError, MissingScopeError, ReauthRequiredError, UpstreamError) as error:
            return [error] * len(commands)
        return [_error_of(account, answer) for answer in answers]


def _take_batch(pending: list[_Pending]) -> list[_Pending]:
    """Up to 20 pending commands in arrival order, at most one per message."""
    chosen: list[_Pending] = []
    messages: set[str] = set()
    for item in list(pending):
        if len(chosen) >= MAX_BATCH_REQUESTS:
            break
        if item.command.message_id in messages:
            continue
        messages.add(item.command.message_id)
        chosen.append(item)
        pending.remove(item)
    return chosen


def _error_of(account: Account, answer: BatchResponse) -> Exception | None:
    """What a request of a batch failed with, as the single call would raise it."""
    if answer.status < 400:
        return None
    if answer.status in (429, 503):
        return ThrottledError(f"Graph answered {answer.status} inside a batch", answer.retry_after or 1.0)
    error = (answer.body or {}).get("error")
    code, message = ("unknown", "") if not isinstance(error, dict) else (
        str(error.get("code", "unknown")), str(error.get("message", ""))[:300]
    )
    if answer.status == 404:
        return NotFoundError(f"Graph 404 {code}: {message}")
    if answer.status == 403:
        return MissingScopeError(account.account_id, WRITE_SCOPE)
    return GraphError(answer.status, code, message)


_batchers: weakref.WeakKeyDictionary[Services, MailboxBatcher] = weakref.WeakKeyDictionary()
_batchers_lock = threading.Lock()


def mailbox_batcher(services: Services) -> MailboxBatcher:
    """The process's batcher of these services (the queue trigger's invocations share it)."""
    with _batchers_lock:
        batcher = _batchers.get(services)
        if batcher is None:
            batcher = _batchers[services] = MailboxBatcher(services)
        return batcher
