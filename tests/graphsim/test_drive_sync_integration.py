"""The drive sync on its real parts: the ledger, the delta links, the accounts and the
``drive-events`` queue in a real Azurite, the Graph drive adapter on the simulator's
OneDrive for Business (whose delta leaves out cTag and paths, as Graph's does)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from azure.storage.queue import QueueClient

from shared.bootstrap import Services
from shared.drive_sync import drive_delta_link, forget_drive_state, sync_drive
from shared.models import Account
from shared.ports import GraphAuth
from shared.resources import DRIVE
from tests.fakes import make_settings

from .drive_helpers import graph_for, seed

pytestmark = pytest.mark.integration


class OneToken:
    """The token provider of the test: the delegated token the simulator issued."""

    def __init__(self, token: str) -> None:
        self.token = token

    def graph_auth(self, account: Account) -> GraphAuth:
        return GraphAuth(account.account_id, self.token)

    def cached_auth(self, account_id: str) -> GraphAuth | None:
        return GraphAuth(account_id, self.token)

    def remember(self, account_id: str, access_token: str, expires_in: int) -> None:
        pass

    def forget(self, account_id: str) -> None:
        pass


class Setup:
    def __init__(self, services: Services, sim: Any, user: dict[str, Any], queue: QueueClient):
        self.services, self.sim, self.user, self.queue = services, sim, user, queue
        self.seen: list[dict[str, Any]] = []

    def connect(self) -> None:
        """The account, connected now: in a later second than what was seeded before (Graph's
        times have whole seconds, and what was created in the connect's second is new)."""
        time.sleep(1.05)
        user = self.user
        self.account = self.services.accounts.save(Account(
            account_id=f"{user['id']}.{user['tenantId']}", tenant_id=user["tenantId"], user_id=user["id"],
            user_principal_name=user["userPrincipalName"], scopes=("User.Read", "Files.ReadWrite.All"),
            connected_at=dt.datetime.now(dt.UTC), owner_id=f"owner-{uuid.uuid4().hex[:6]}",
        ))

    def sync(self) -> Any:
        return sync_drive(self.services, self.account.account_id, reason="notification")

    def events(self) -> list[dict[str, Any]]:
        for message in self.queue.receive_messages(messages_per_page=32, visibility_timeout=30):
            self.seen.append(json.loads(base64.b64decode(message.content)))
            self.queue.delete_message(message)
        return [e for e in self.seen if e["data"]["accountId"] == self.account.account_id]

    def control(self, method: str, rest: str, **kwargs: Any) -> Any:
        response = self.sim.request(method, f"/users/{self.user['id']}/drive{rest}", **kwargs)
        assert response.ok, response.text
        return response


@pytest.fixture
def setup(azurite, graphsim, sim, sim_user, confidential_app, sign_in) -> Iterator[Setup]:  # type: ignore[no-untyped-def]
    session = graph_for(graphsim, confidential_app, sign_in, sim_user["userPrincipalName"])
    settings = make_settings(AzureWebJobsStorage=azurite.connection_string, GRAPH_API_ENDPOINT=graphsim.graph_url)
    services = Services(settings, tokens=OneToken(session.token))
    queue = QueueClient.from_connection_string(azurite.connection_string, "drive-events")
    try:
        queue.create_queue()
    except Exception:  # noqa: BLE001,S110 - it exists already
        pass
    yield Setup(services, sim, sim_user, queue)
    session.close()


def test_edits_renames_and_deletions_become_drive_events_from_the_real_queue(setup: Setup) -> None:
    history = seed(setup.sim, setup.user, "Docs/old.docx", b"written before the connect")
    setup.connect()
    assert setup.sync().published == 0  # the first round: everything there is history
    key = DRIVE.sync_key(setup.account.account_id)
    assert setup.services.ledger.marks(key, [history["id"]])[history["id"]].content_tag.startswith("quickXorHash:")

    setup.control("PUT", f"/items/{history['id']}/content", data=b"edited in the browser")
    setup.control("PATCH", f"/items/{history['id']}", json={"name": "renamed.docx"})
    assert setup.sync().updated == 1  # one round sees the latest state once
    setup.control("PUT", f"/items/{history['id']}/content", data=b"edited again")
    setup.sync()
    setup.control("PATCH", f"/items/{history['id']}", json={"name": "final.docx"})
    setup.sync()
    setup.control("DELETE", f"/items/{history['id']}")
    setup.sync()
    setup.sync()  # a replay publishes nothing
    events = setup.events()
    assert [(e["type"], e["data"]["contentChanged"]) for e in events] == [
        ("com.microsoft.graph.driveItem.updated", True),
        ("com.microsoft.graph.driveItem.updated", True),
        ("com.microsoft.graph.driveItem.updated", False),
        ("com.microsoft.graph.driveItem.deleted", False),
    ]
    first = events[0]["data"]
    assert first["path"] == "/Docs/renamed.docx" and first["cTag"] and first["size"] == len(b"edited in the browser")
    assert first["ownerId"] == setup.account.owner_id and first["driveId"].startswith("b!")
    assert first["lastModifiedBy"] == setup.user["displayName"]
    assert events[2]["data"]["name"] == "final.docx" and events[2]["data"]["cTag"] == events[1]["data"]["cTag"]
    assert len({e["id"] for e in events}) == 4


def test_after_a_reset_the_full_round_publishes_what_changed_meanwhile(setup: Setup) -> None:
    kept = seed(setup.sim, setup.user, "Keep/kept.txt", b"kept")
    gone = seed(setup.sim, setup.user, "Keep/gone.txt", b"gone")
    setup.connect()
    setup.sync()
    setup.control("POST", "/delta/reset")
    setup.control("DELETE", f"/items/{gone['id']}")
    new = seed(setup.sim, setup.user, "Keep/new.txt", b"new")
    result = setup.sync()
    assert result.restarted
    got = sorted((e["type"].rsplit(".", 1)[1], e["subject"]) for e in setup.events())
    assert got == sorted([("deleted", gone["id"]), ("created", new["id"])])
    assert kept["id"] not in {e["subject"] for e in setup.events()}


def test_a_disconnect_drops_the_drives_partition_with_its_link(setup: Setup) -> None:
    seed(setup.sim, setup.user, "a.txt", b"a")
    setup.connect()
    setup.sync()
    assert drive_delta_link(setup.services, setup.account)
    forget_drive_state(setup.services, setup.account.account_id, sleep=lambda seconds: None)
    assert drive_delta_link(setup.services, setup.account) is None  # the same connection: the row is gone
    key = DRIVE.sync_key(setup.account.account_id)
    assert setup.services.ledger.progress(key) is None
    assert list(setup.services.ledger.live_message_ids(key)) == []
