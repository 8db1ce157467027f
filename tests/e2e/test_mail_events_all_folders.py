"""``MAIL_FOLDERS=*`` through the whole local stack: one mailbox-wide subscription, a delta
for every folder (a folder the user made included), moves as single updated events."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from devstack.stack import LocalStack
from tests.conftest import STACK_SETTINGS
from tests.e2e.test_mail_actions import create_folder, user_token
from tests.e2e.test_mail_events import QUIET, Mailbox, first_round_done
from tests.support.stack import connect_user, function_key_headers, new_user, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    data_dir: Path = tmp_path_factory.mktemp("mail-events-all")
    with LocalStack.on_free_ports(data_dir, extra_settings={**STACK_SETTINGS, "MAIL_FOLDERS": "*"}) as running:
        yield running


def test_every_folder_is_watched_through_one_mailbox_wide_subscription(stack: LocalStack) -> None:
    user = new_user(stack, "everything")
    receipts = create_folder(stack, user_token(stack, user), "Receipts")  # before the connect
    assert connect_user(stack, user["userPrincipalName"]).status_code == 200
    mailbox = Mailbox(stack, user)
    [subscription] = wait_for(mailbox.subscriptions, what="the subscription")
    assert subscription["resource"] == "/me/messages" and subscription["immutableIds"] is True
    wait_for(lambda: first_round_done(stack, mailbox.account_id), what="the first delta rounds")

    in_receipts = mailbox.send("filed by a rule", folder=receipts["id"])
    assert mailbox.wait("created", in_receipts)["data"]["folder"] == receipts["id"]
    junk = mailbox.send("straight to junk", folder="junkemail")
    assert mailbox.wait("created", junk)["data"]["folder"] == "junkemail"

    message_id = mailbox.send("to be filed")
    mailbox.wait("created", message_id)
    mailbox.move(message_id, receipts["id"])
    moved = mailbox.wait("updated", message_id)
    assert moved["data"]["folder"] == receipts["id"] and moved["data"]["previousFolder"] == "inbox"
    # The connector's delete moves the mail to Deleted Items, which is watched too.
    deleted = requests.delete(
        f"{stack.devhost_url}/api/accounts/{mailbox.account_id}/messages/{quote(junk, safe='')}",
        headers=function_key_headers(stack), timeout=30,
    )
    assert deleted.status_code == 204, deleted.text
    binned = mailbox.wait("updated", junk)
    assert binned["data"]["folder"] == "deleteditems" and binned["data"]["previousFolder"] == "junkemail"
    time.sleep(QUIET)
    assert [e["type"].rsplit(".", 1)[1] for e in mailbox.of(message_id)] == ["created", "updated"]
