"""Queue triggers: ``graph-notifications`` (the triggers of one webhook POST, one per
account, each -> delta sync -> events, side by side: ``shared.trigger_batch``) and
``mail-sync`` (a delta round the app asked for itself: the first round after a connect,
the rest of a round too long for one invocation, pending work handed on; each job names the
resource it syncs, mail or drive).

An exception hands the message back to the queue: it is retried after the visibility
timeout and, after host.json's ``maxDequeueCount``, moved to ``graph-notifications-poison``
by the host, with the reason logged here. When only some triggers of a message fail, they
alone are queued again (``shared.trigger_batch.settle``). A message that can never succeed
(not a trigger at all, or one malformed trigger of a message) goes to the poison queue at
once rather than being retried; the message's other triggers still run.
"""

from __future__ import annotations

import logging
import time

import azure.functions as func

from shared import bootstrap
from shared.config import MAIL_SYNC_QUEUE, NOTIFICATION_QUEUE
from shared.errors import InvalidInputError, ThrottledError
from shared.resource_sync import sync_resource
from shared.sync_runner import parse_sync_request
from shared.trigger_batch import MAX_ATTEMPTS, POISON_QUEUE, process_triggers, settle
from shared.webhook import parse_triggers

bp = func.Blueprint()
log = logging.getLogger(__name__)

SYNC_POISON_QUEUE = f"{MAIL_SYNC_QUEUE}-poison"
# Graph's Retry-After is honoured before the message goes back to the queue, whose own
# retry comes after host.json's visibilityTimeout only (docs/graph-notes.md "Throttling").
MAX_THROTTLE_WAIT_SECONDS = 30.0
sleep = time.sleep


@bp.function_name("process_graph_notifications")
@bp.queue_trigger(arg_name="message", queue_name=NOTIFICATION_QUEUE, connection="AzureWebJobsStorage")
def process_graph_notifications(message: func.QueueMessage) -> None:
    services = bootstrap.services()
    try:
        read = parse_triggers(message.get_body())
    except InvalidInputError as error:
        log.error(
            "message %s is not a notification trigger (%s): moved to %s", message.id, error, POISON_QUEUE
        )
        services.queues.send(POISON_QUEUE, [message.get_body().decode("utf-8", "replace")])
        return
    if read.malformed:
        log.error(
            "message %s: %d malformed trigger(s) moved to %s", message.id, len(read.malformed), POISON_QUEUE
        )
        services.queues.send(POISON_QUEUE, read.malformed)
    batch = process_triggers(services, read.triggers)
    for outcome in batch.outcomes:
        if outcome.dropped:
            log.warning("account %s: trigger dropped: %s", outcome.account_id, outcome.dropped)
    for trigger, reason in batch.failures:
        _log_failure(trigger.account_id, message, reason)
    settled = settle(services, read, batch, message.dequeue_count or 1)
    if settled.retried:
        log.warning(
            "message %s: %d failed trigger(s) of %d queued again on their own, in %d s",
            message.id, settled.retried, len(read.triggers), settled.delay_seconds,
        )
    if settled.poisoned:
        log.error("message %s: %d trigger(s) failed %d times: moved to %s", message.id, settled.poisoned, MAX_ATTEMPTS, POISON_QUEUE)
    if settled.error is not None:
        _wait_out_throttling(settled.error)
        raise settled.error


@bp.function_name("run_mail_sync")
@bp.queue_trigger(arg_name="message", queue_name=MAIL_SYNC_QUEUE, connection="AzureWebJobsStorage")
def run_mail_sync(message: func.QueueMessage) -> None:
    services = bootstrap.services()
    try:
        job = parse_sync_request(message.get_body())
    except InvalidInputError as error:
        log.error("message %s is not a sync job (%s): moved to %s", message.id, error, SYNC_POISON_QUEUE)
        services.queues.send(SYNC_POISON_QUEUE, [message.get_body().decode("utf-8", "replace")])
        return
    account_id, reason = job.account_id, job.reason
    try:
        result = sync_resource(services, account_id, job.resource, reason=reason)  # the job's resource
    except Exception as error:
        _before_retry(account_id, message, error)
        raise
    if result.skipped in ("unknown_account", "inactive"):
        log.info("account %s: queued %s round dropped: %s", account_id, reason, result.skipped)


def _before_retry(account_id: str, message: func.QueueMessage, error: Exception) -> None:
    """Log why the message goes back to the queue; after throttling, wait out Retry-After."""
    _log_failure(account_id, message, error)
    _wait_out_throttling(error)


def _log_failure(account_id: str, message: func.QueueMessage, error: Exception) -> None:
    log.error(
        "account %s: processing failed on attempt %s (%s: %s); the queue retries it",
        account_id,
        message.dequeue_count,
        type(error).__name__,
        error,
    )


def _wait_out_throttling(error: Exception) -> None:
    if isinstance(error, ThrottledError):
        sleep(min(error.retry_after, MAX_THROTTLE_WAIT_SECONDS))
