"""The ``renew_subscriptions`` timer as the host indexes and calls it, over fakes."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from azure.functions.timer import TimerRequest

from shared import bootstrap
from shared.subscriptions import mailbox_subscription_expiry
from tests.fakes import EPOCH, make_services
from tests.support.app import app_functions, handler
from tests.unit.renewal_fakes import connect_account


@pytest.fixture
def services() -> Iterator[Any]:
    installed = make_services(real_tokens=False)
    bootstrap.use(installed)
    yield installed
    bootstrap.use(None)


def test_the_timer_runs_on_the_renewal_schedule_setting_and_not_at_startup() -> None:
    bindings = [b.get_dict_repr() for b in app_functions()["renew_subscriptions"].get_bindings()]

    assert len(bindings) == 1
    assert bindings[0]["type"] == "timerTrigger"
    assert bindings[0]["schedule"] == "%RENEWAL_SCHEDULE%"
    assert bindings[0]["runOnStartup"] is False


def test_a_timer_tick_renews_what_expires_within_the_window(services: Any) -> None:
    account, sub = connect_account(services, 1, expires_in=dt.timedelta(hours=5))
    later, _ = connect_account(services, 2, expires_in=dt.timedelta(days=3))

    handler("renew_subscriptions")(TimerRequest(past_due=False))

    assert services.subscriptions.get(account.account_id, sub.subscription_id).expires_at == (
        mailbox_subscription_expiry(EPOCH)
    )
    assert [a for m, a in services.graph.calls if m == "renew_subscription"] == [account.account_id]


def test_a_late_tick_is_logged_as_past_due(services: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="shared.renewal")

    handler("renew_subscriptions")(TimerRequest(past_due=True))

    assert any("past due" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert any(
        "past_due=True" in r.getMessage() for r in caplog.records if r.getMessage().startswith("renewal run:")
    )
