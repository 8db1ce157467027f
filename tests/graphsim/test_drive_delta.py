"""The drive delta in the simulator: enumeration, changes, deleted facet, token=latest, 410 resync;
and the control API's browser edits, renames and seeding as delta and Graph see them."""

from __future__ import annotations

import pytest

from .drive_helpers import graph_for, seed


@pytest.fixture
def files(graphsim, confidential_app, sign_in, sim_user):
    session = graph_for(graphsim, confidential_app, sign_in, sim_user["userPrincipalName"])
    yield session
    session.close()


def _drain(files, url: str, **params) -> tuple[list[dict], str, int]:
    """Every page of a delta round: the items, the deltaLink and the number of pages."""
    items: list[dict] = []
    pages = 0
    response = files.get(url, params=params or None)
    while True:
        assert response.status_code == 200, response.text
        body = response.json()
        pages += 1
        items += body["value"]
        if "@odata.deltaLink" in body:
            return items, body["@odata.deltaLink"], pages
        response = files.get(body["@odata.nextLink"])


def test_the_first_round_enumerates_the_drive_in_pages_then_gives_a_delta_link(files, sim, sim_user):
    for n in range(3):
        seed(sim, sim_user, f"Folder/doc{n}.txt", f"text {n}")
    items, delta_link, pages = _drain(files, "/me/drive/root/delta", **{"$top": "2"})
    assert pages == 3
    by_name = {i.get("name"): i for i in items}
    assert {"root", "Folder", "doc0.txt", "doc1.txt", "doc2.txt"} <= set(by_name)
    names = [i["name"] for i in items]
    assert names.index("Folder") < names.index("doc0.txt")  # parents come before children
    assert all("path" not in i["parentReference"] for i in items)  # delta leaves out the path
    assert all("cTag" not in i for i in items)  # as OneDrive for Business does
    assert by_name["doc1.txt"]["file"]["hashes"]["quickXorHash"]
    assert files.get(delta_link).json()["value"] == []


def test_changes_since_a_delta_link_come_once_each_in_their_latest_state(files, sim, sim_user):
    item = seed(sim, sim_user, "Work/report.docx", "v1")
    _, delta_link, _ = _drain(files, "/me/drive/root/delta")
    sim.put(f"/users/{sim_user['id']}/drive/items/{item['id']}/content", data=b"v2")
    sim.put(f"/users/{sim_user['id']}/drive/items/{item['id']}/content", data=b"v3 from the browser")
    sim.patch(f"/users/{sim_user['id']}/drive/items/{item['id']}", json={"name": "final.docx"})
    changes, next_link, _ = _drain(files, delta_link)
    files_seen = [c for c in changes if c["id"] == item["id"]]
    assert len(files_seen) == 1 and files_seen[0]["name"] == "final.docx"
    assert files_seen[0]["size"] == len(b"v3 from the browser")
    assert [c["name"] for c in changes] == ["root", "Work", "final.docx"]  # parents first, as Graph sends them
    assert files.get(next_link).json()["value"] == []
    excluded = files.get(delta_link, headers={"deltaExcludeParent": "true"}).json()["value"]
    assert [c["id"] for c in excluded] == [item["id"]]


def test_a_deleted_item_carries_the_deleted_facet(files, sim, sim_user):
    item = seed(sim, sim_user, "gone.txt", "bye")
    _, delta_link, _ = _drain(files, "/me/drive/root/delta")
    assert sim.delete(f"/users/{sim_user['id']}/drive/items/{item['id']}").status_code == 204
    changes, _, _ = _drain(files, delta_link)
    assert len(changes) == 1
    assert changes[0]["id"] == item["id"] and changes[0]["deleted"] == {"state": "deleted"}
    assert "name" not in changes[0]  # OneDrive for Business leaves out the name of a deleted item


def test_token_latest_skips_what_exists_and_sees_only_what_follows(files, sim, sim_user):
    seed(sim, sim_user, "before.txt", "x")
    latest = files.get("/me/drive/root/delta", params={"token": "latest"}).json()
    assert latest["value"] == [] and "@odata.deltaLink" in latest
    after = seed(sim, sim_user, "after.txt", "y")
    changes, _, _ = _drain(files, latest["@odata.deltaLink"])
    assert [c["id"] for c in changes if "file" in c] == [after["id"]]


def test_the_function_form_of_delta_answers_like_the_path_form(files, sim, sim_user):
    seed(sim, sim_user, "fn.txt", "x")
    drive_id = files.get("/me/drive").json()["id"]
    path_form, link, _ = _drain(files, "/me/drive/root/delta")
    function_form, _, _ = _drain(files, f"/drives/{drive_id}/items/root/delta()")
    assert [i["id"] for i in path_form] == [i["id"] for i in function_form]
    token = link.split("token=", 1)[1]
    assert files.get(f"/me/drive/root/delta(token='{token}')").json()["value"] == []


def test_an_expired_token_answers_410_with_a_location_that_starts_over(files, sim, sim_user):
    seed(sim, sim_user, "keep.txt", "x")
    _, delta_link, _ = _drain(files, "/me/drive/root/delta", **{"$top": "1"})
    page = files.get("/me/drive/root/delta", params={"$top": "1"}).json()
    assert sim.post(f"/users/{sim_user['id']}/drive/delta/reset").status_code == 204
    for stale in (delta_link, page["@odata.nextLink"]):
        gone = files.get(stale)
        assert gone.status_code == 410
        assert gone.json()["error"]["code"] == "resyncRequired"
        assert gone.json()["error"]["innerError"]["code"] == "resyncChangesApplyDifferences"
    restart, _, _ = _drain(files, gone.headers["Location"])
    assert "keep.txt" in [i.get("name") for i in restart]
    assert files.get("/me/drive/root/delta", params={"token": "not-a-token"}).status_code == 400


def test_the_delta_can_include_ctag_when_the_setting_asks(files, sim, sim_user):
    item = seed(sim, sim_user, "tagged.txt", "x")
    sim.put("/settings", json={"driveDeltaIncludesCTag": True}).raise_for_status()
    items, _, _ = _drain(files, "/me/drive/root/delta")
    assert next(i for i in items if i["id"] == item["id"])["cTag"] == item["cTag"]


def test_a_browser_edit_is_the_users_a_rename_keeps_the_ctag(files, sim, sim_user):
    item = seed(sim, sim_user, "Docs/plan.docx", "draft")
    assert item["lastModifiedBy"] == {"user": {"email": sim_user["userPrincipalName"], "id": sim_user["id"],
                                               "displayName": "Test User"}}
    edited = sim.put(f"/users/{sim_user['userPrincipalName']}/drive/items/{item['id']}/content", data=b"edited")
    assert edited.status_code == 200
    assert edited.json()["cTag"] != item["cTag"] and edited.json()["eTag"] != item["eTag"]
    assert "application" not in edited.json()["lastModifiedBy"]
    assert files.get(f"/me/drive/items/{item['id']}/content").content == b"edited"
    renamed = sim.patch(f"/users/{sim_user['id']}/drive/items/{item['id']}", json={"name": "plan v2.docx"}).json()
    assert renamed["cTag"] == edited.json()["cTag"] and renamed["eTag"] != edited.json()["eTag"]
    assert sim.get(f"/users/{sim_user['id']}/drive/items/{item['id']}/content").content == b"edited"
    assert sim.put(f"/users/{sim_user['id']}/drive/items/01NOPE/content", data=b"x").status_code == 404
    assert sim.post(f"/users/{sim_user['id']}/drive/items", json={"content": "no path"}).status_code == 400
    folder = sim.post(f"/users/{sim_user['id']}/drive/items", json={"path": "Empty", "folder": True})
    assert folder.status_code == 201 and "folder" in folder.json()


def test_select_on_the_first_request_holds_for_every_page(files, sim, sim_user):
    for n in range(3):
        seed(sim, sim_user, f"Sel/s{n}.txt", "x")
    items, _, pages = _drain(files, "/me/drive/root/delta", **{"$top": "2", "$select": "name,file"})
    assert pages >= 3
    assert all(set(i) <= {"id", "name", "file", "@odata.etag"} for i in items)
    assert {i["name"] for i in items if "file" in i} == {"s0.txt", "s1.txt", "s2.txt"}
