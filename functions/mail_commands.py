"""Queue trigger on ``mail-commands``: one command per message, its result on ``mail-command-results``.

``shared.mail_commands.handle_command`` runs the command at most once and publishes the
result itself (before it marks the command published), so nothing leaves through an output
binding. Every outcome of the command, malformed ones included, is a result: only a
storage failure raises, and the queue then delivers the message again (whose claim the
next delivery recognises).
"""

from __future__ import annotations

import logging

import azure.functions as func

from shared import bootstrap
from shared.config import MAIL_COMMAND_QUEUE
from shared.mail_commands import handle_command, prune_command_log

bp = func.Blueprint()
log = logging.getLogger(__name__)

# Daily, at a quiet time: the command log's records past their retention go.
PRUNE_SCHEDULE = "0 17 3 * * *"


@bp.function_name("run_mail_commands")
@bp.queue_trigger(arg_name="message", queue_name=MAIL_COMMAND_QUEUE, connection="AzureWebJobsStorage")
def run_mail_commands(message: func.QueueMessage) -> None:
    outcome = handle_command(
        bootstrap.services(), message.get_body(), redelivered=(message.dequeue_count or 1) > 1
    )
    if outcome.published is None:
        log.info("mail command %s: nothing published (%s)", outcome.command_id, outcome.note)


@bp.function_name("purge_mail_commands")
@bp.timer_trigger(arg_name="timer", schedule=PRUNE_SCHEDULE, run_on_startup=False, use_monitor=True)
def purge_mail_commands(timer: func.TimerRequest) -> None:
    prune_command_log(bootstrap.services())
