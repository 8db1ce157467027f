"""The drive delta calls of the ``DriveApi`` port, the same assertions against the fake of
tests/drive_delta_fakes.py and against the real adapter (``RequestsDriveApi``) on the
simulator's OneDrive for Business: passing against the fake means the same against Graph,
as far as the drive sync depends on it (docs/graph-notes.md "OneDrive")."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import pytest

from shared.adapters.graph_drive import RequestsDriveApi
from shared.errors import DeltaTokenExpiredError
from shared.ports import GraphAuth, JsonObject
from tests.drive_delta_fakes import FakeDriveDelta

from .drive_helpers import graph_for, seed


class Drive(Protocol):
    """A user's drive as the user changes it, and the port the sync reads it through."""

    api: Any
    auth: GraphAuth

    def put(self, path: str, content: bytes) -> str: ...
    def edit(self, item_id: str, content: bytes) -> None: ...
    def rename(self, item_id: str, name: str) -> None: ...
    def delete(self, item_id: str) -> None: ...
    def reset(self) -> None: ...


class FakeSide:
    def __init__(self) -> None:
        self.api = FakeDriveDelta(page_size=2)
        self.auth = GraphAuth("adele-oid.tenant-1", "token")
        self.drive = self.api.drive(self.auth.account_id)

    def put(self, path: str, content: bytes) -> str:
        return self.drive.put(path, content)

    def edit(self, item_id: str, content: bytes) -> None:
        self.drive.edit(item_id, content)

    def rename(self, item_id: str, name: str) -> None:
        self.drive.rename(item_id, name)

    def delete(self, item_id: str) -> None:
        self.drive.delete(item_id)

    def reset(self) -> None:
        self.drive.reset()


class SimulatorSide:
    def __init__(self, graphsim: Any, sim: Any, user: dict[str, Any], token: str) -> None:
        self.api = RequestsDriveApi(graphsim.graph_url)
        self.auth = GraphAuth(f"{user['id']}.{user['tenantId']}", token)
        self.sim, self.user = sim, user

    def put(self, path: str, content: bytes) -> str:
        return str(seed(self.sim, self.user, path, content)["id"])

    def edit(self, item_id: str, content: bytes) -> None:
        assert self.sim.put(f"/users/{self.user['id']}/drive/items/{item_id}/content", data=content).ok

    def rename(self, item_id: str, name: str) -> None:
        assert self.sim.patch(f"/users/{self.user['id']}/drive/items/{item_id}", json={"name": name}).ok

    def delete(self, item_id: str) -> None:
        assert self.sim.delete(f"/users/{self.user['id']}/drive/items/{item_id}").status_code == 204

    def reset(self) -> None:
        assert self.sim.post(f"/users/{self.user['id']}/drive/delta/reset").status_code == 204


@pytest.fixture(params=["fake", "simulator"])
def side(request: pytest.FixtureRequest) -> Iterator[Drive]:
    if request.param == "fake":
        yield FakeSide()
        return
    graphsim, sim = request.getfixturevalue("graphsim"), request.getfixturevalue("sim")
    user = request.getfixturevalue("sim_user")
    session = graph_for(graphsim, request.getfixturevalue("confidential_app"), request.getfixturevalue("sign_in"),
                        user["userPrincipalName"])
    yield SimulatorSide(graphsim, sim, user, session.token)
    session.close()


def round_of(side: Drive, link: str | None) -> tuple[list[JsonObject], str]:
    """Every page of one round: its items and the deltaLink it ends with."""
    items: list[JsonObject] = []
    for _ in range(1000):
        page = side.api.drive_delta_page(side.auth, link)
        items += page.items
        if page.delta_link:
            assert page.next_link is None
            return items, page.delta_link
        assert page.next_link
        link = page.next_link
    raise AssertionError("the round never ended")


def by_id(items: list[JsonObject]) -> dict[str, JsonObject]:
    return {item["id"]: item for item in items}


def test_a_first_round_gives_the_whole_drive_parents_first_without_ctag_or_path(side: Drive) -> None:
    report = side.put("Docs/Reports/q3.docx", b"draft")
    side.put("Docs/notes.txt", b"notes")
    items, delta_link = round_of(side, None)
    assert "root" in items[0] and delta_link
    names = [item.get("name") for item in items]
    assert names.index("Docs") < names.index("Reports") < names.index("q3.docx")
    file = by_id(items)[report]
    assert file["eTag"] and file["file"]["hashes"]["quickXorHash"]
    assert file["parentReference"]["id"] and file["parentReference"]["driveId"]
    assert all("cTag" not in item and "path" not in item.get("parentReference", {}) for item in items)
    assert all("folder" in item or "file" in item for item in items)


def test_an_edit_comes_with_its_parent_folders_whose_etag_did_not_change(side: Drive) -> None:
    report = side.put("Docs/Reports/q3.docx", b"draft")
    before, delta_link = round_of(side, None)
    side.edit(report, b"final")
    changes, _ = round_of(side, delta_link)
    assert changes[-1]["id"] == report and len([c for c in changes if c["id"] == report]) == 1
    folders = [c for c in changes[:-1] if "root" not in c]
    assert [c["name"] for c in folders] == ["Docs", "Reports"]
    assert all(c["eTag"] == by_id(before)[c["id"]]["eTag"] for c in folders)
    old, new = by_id(before)[report], changes[-1]
    assert new["eTag"] != old["eTag"]
    assert new["file"]["hashes"]["quickXorHash"] != old["file"]["hashes"]["quickXorHash"]


def test_a_rename_changes_the_etag_but_neither_the_ctag_nor_the_hash(side: Drive) -> None:
    report = side.put("Docs/q3.docx", b"draft")
    before, delta_link = round_of(side, None)
    read_before = side.api.get_items(side.auth, [report])[report]
    side.rename(report, "q3 final.docx")
    changes, _ = round_of(side, delta_link)
    renamed = by_id(changes)[report]
    assert renamed["name"] == "q3 final.docx" and renamed["eTag"] != by_id(before)[report]["eTag"]
    assert renamed["file"]["hashes"] == by_id(before)[report]["file"]["hashes"]
    read_after = side.api.get_items(side.auth, [report])[report]
    assert read_after["cTag"] == read_before["cTag"] and read_after["eTag"] != read_before["eTag"]


def test_a_read_gives_the_ctag_and_path_delta_leaves_out_and_none_for_a_deleted_item(side: Drive) -> None:
    report = side.put("Docs/Reports/q3.docx", b"draft")
    gone = side.put("Docs/gone.txt", b"soon gone")
    side.delete(gone)
    read = side.api.get_items(side.auth, [report, gone])
    assert read[gone] is None
    item = read[report]
    assert item["cTag"] and item["eTag"] and item["name"] == "q3.docx"
    assert item["parentReference"]["path"].endswith("root:/Docs/Reports")
    side.edit(report, b"final")
    assert side.api.get_items(side.auth, [report])[report]["cTag"] != item["cTag"]


def test_a_read_of_many_items_answers_for_each(side: Drive) -> None:
    ids = [side.put(f"Many/f{n}.txt", f"{n}".encode()) for n in range(23)]  # more than one $batch
    read = side.api.get_items(side.auth, ids)
    assert set(read) == set(ids) and all(read[i] is not None and read[i]["id"] == i for i in ids)


def test_a_deletion_comes_with_the_deleted_facet_and_without_a_name(side: Drive) -> None:
    gone = side.put("Docs/gone.txt", b"soon gone")
    _, delta_link = round_of(side, None)
    side.delete(gone)
    changes, _ = round_of(side, delta_link)
    deleted = by_id(changes)[gone]
    assert "deleted" in deleted and "name" not in deleted


def test_after_a_reset_an_old_link_is_gone_and_a_new_round_starts_over(side: Drive) -> None:
    side.put("Docs/a.txt", b"a")
    _, delta_link = round_of(side, None)
    side.reset()
    with pytest.raises(DeltaTokenExpiredError):
        side.api.drive_delta_page(side.auth, delta_link)
    items, _ = round_of(side, None)
    assert "a.txt" in [item.get("name") for item in items]
