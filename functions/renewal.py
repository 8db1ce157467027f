"""Timer ``renew_subscriptions``: keeps every mailbox subscription alive (``shared.renewal``).

The schedule is the setting ``RENEWAL_SCHEDULE`` (NCRONTAB, every 15 minutes by default).
"""

from __future__ import annotations

import azure.functions as func

from shared import bootstrap
from shared.renewal import renew_subscriptions as run_renewal

bp = func.Blueprint()


@bp.function_name("renew_subscriptions")
@bp.timer_trigger(arg_name="timer", schedule="%RENEWAL_SCHEDULE%", run_on_startup=False, use_monitor=True)
def renew_subscriptions(timer: func.TimerRequest) -> None:
    run_renewal(bootstrap.services(), past_due=timer.past_due)
