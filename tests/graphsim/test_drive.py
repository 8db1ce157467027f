"""OneDrive in the simulator: drives, items by id and by path, children, simple upload,
download, sharing links, rename, delete and the Files scopes."""

from __future__ import annotations

import uuid

import pytest
import requests

from .drive_helpers import graph_for, seed


@pytest.fixture
def files(graphsim, confidential_app, sign_in, sim_user):
    session = graph_for(graphsim, confidential_app, sign_in, sim_user["userPrincipalName"])
    yield session
    session.close()


def test_the_drive_of_the_user_is_a_business_drive_owned_by_them(files, sim_user):
    drive = files.get("/me/drive").json()
    assert drive["driveType"] == "business" and drive["id"].startswith("b!")
    assert drive["owner"]["user"]["id"] == sim_user["id"]
    assert files.get(f"/drives/{drive['id']}").json()["id"] == drive["id"]
    assert files.get("/me/drives").json()["value"][0]["id"] == drive["id"]
    root = files.get("/me/drive/root").json()
    assert "root" in root and root["folder"]["childCount"] == 0
    assert files.get(f"/drives/{drive['id']}/items/root").json()["id"] == root["id"]


def test_a_simple_upload_creates_the_file_and_its_folders_then_replaces_it(files, sim_user):
    created = files.put("/me/drive/root:/Projects/2026/plan.docx:/content", data=b"first draft")
    assert created.status_code == 201, created.text
    item = created.json()
    assert item["name"] == "plan.docx" and item["size"] == len(b"first draft")
    assert item["file"]["mimeType"] == "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    assert item["parentReference"]["path"] == "/drive/root:/Projects/2026"
    assert item["lastModifiedBy"]["user"]["id"] == sim_user["id"] and "application" in item["lastModifiedBy"]
    assert "Doc.aspx" in item["webUrl"] and item["createdDateTime"] and item["lastModifiedDateTime"]
    replaced = files.put("/me/drive/root:/Projects/2026/plan.docx:/content", data=b"second draft")
    assert replaced.status_code == 200
    again = replaced.json()
    assert again["id"] == item["id"]
    assert again["eTag"] != item["eTag"] and again["cTag"] != item["cTag"]
    by_path = files.get("/me/drive/root:/Projects/2026/plan.docx:").json()
    by_id = files.get(f"/me/drive/items/{item['id']}").json()
    assert by_path["id"] == by_id["id"] == item["id"] and by_id["size"] == len(b"second draft")
    folder = files.get("/me/drive/root:/Projects").json()
    assert folder["folder"]["childCount"] == 1


def test_conflict_behaviour_fail_answers_409_and_rename_keeps_both(files):
    url = "/me/drive/root:/notes.txt:/content"
    assert files.put(url, data=b"a").status_code == 201
    failed = files.put(url, params={"@microsoft.graph.conflictBehavior": "fail"}, data=b"b")
    assert failed.status_code == 409 and failed.json()["error"]["code"] == "nameAlreadyExists"
    renamed = files.put(url, params={"@microsoft.graph.conflictBehavior": "rename"}, data=b"c")
    assert renamed.status_code == 201 and renamed.json()["name"] == "notes 1.txt"
    names = sorted(i["name"] for i in files.get("/me/drive/root/children").json()["value"])
    assert names == ["notes 1.txt", "notes.txt"]
    assert files.get("/me/drive/root:/notes.txt:/content", allow_redirects=False).status_code == 302
    assert files.put(url, params={"@microsoft.graph.conflictBehavior": "keep"}, data=b"d").status_code == 400


def test_content_redirects_to_a_download_url_that_serves_the_bytes_and_ranges(files):
    payload = bytes(range(256)) * 40
    item = files.put("/me/drive/root:/data.bin:/content", data=payload).json()
    redirect = files.get(f"/me/drive/items/{item['id']}/content", allow_redirects=False)
    assert redirect.status_code == 302
    location = redirect.headers["Location"]
    plain = requests.get(location, verify=files.verify, timeout=10)  # no bearer token: pre-authenticated
    assert plain.status_code == 200 and plain.content == payload
    part = requests.get(location, headers={"Range": "bytes=100-199"}, verify=files.verify, timeout=10)
    assert part.status_code == 206 and part.content == payload[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(payload)}"
    tail = requests.get(location, headers={"Range": "bytes=-10"}, verify=files.verify, timeout=10)
    assert tail.content == payload[-10:]
    beyond = requests.get(location, headers={"Range": f"bytes={len(payload)}-"}, verify=files.verify, timeout=10)
    assert beyond.status_code == 416
    forged = requests.get(location[:-4] + "abcd", verify=files.verify, timeout=10)
    assert forged.status_code == 401
    assert files.get(f"/me/drive/items/{item['id']}/content").content == payload  # followed by requests
    assert item["@microsoft.graph.downloadUrl"].startswith(files.simulator.base_url + "/_files/download/")


def test_children_are_paged_with_top_and_next_link(files, sim, sim_user):
    for n in range(5):
        seed(sim, sim_user, f"Inbox docs/file{n}.txt", f"content {n}")
    first = files.get("/me/drive/root:/Inbox docs:/children", params={"$top": 2}).json()
    names = [i["name"] for i in first["value"]]
    link = first["@odata.nextLink"]
    while link:
        page = files.get(link).json()
        names += [i["name"] for i in page["value"]]
        link = page.get("@odata.nextLink")
    assert names == [f"file{n}.txt" for n in range(5)]
    folder_id = files.get("/me/drive/root:/Inbox docs:").json()["id"]
    assert len(files.get(f"/me/drive/items/{folder_id}/children").json()["value"]) == 5


def test_folders_are_created_with_post_children(files):
    made = files.post("/me/drive/root/children", json={"name": "Reports", "folder": {}})
    assert made.status_code == 201 and "folder" in made.json()
    again = files.post("/me/drive/root/children", json={"name": "reports", "folder": {}})
    assert again.status_code == 409  # names are unique in a folder, whatever their case
    renamed = files.post("/me/drive/root/children",
                         json={"name": "Reports", "folder": {}, "@microsoft.graph.conflictBehavior": "rename"})
    assert renamed.json()["name"] == "Reports 1"


def test_create_link_gives_a_permission_with_a_web_url_and_reuses_it(files):
    item = files.put("/me/drive/root:/share.xlsx:/content", data=b"x").json()
    url = f"/me/drive/items/{item['id']}/createLink"
    edit = files.post(url, json={"type": "edit", "scope": "organization"})
    assert edit.status_code == 201
    permission = edit.json()
    assert permission["link"]["type"] == "edit" and permission["link"]["scope"] == "organization"
    assert permission["roles"] == ["write"] and permission["link"]["webUrl"].startswith("https://")
    same = files.post(url, json={"type": "edit", "scope": "organization"})
    assert same.status_code == 200 and same.json()["id"] == permission["id"]
    view = files.post(url, json={"type": "view", "scope": "anonymous"}).json()
    assert view["roles"] == ["read"] and view["link"]["webUrl"] != permission["link"]["webUrl"]
    assert files.post(url, json={"type": "own"}).status_code == 400
    assert len(files.get(f"/me/drive/items/{item['id']}/permissions").json()["value"]) == 2


def test_rename_changes_the_etag_but_not_the_ctag(files):
    item = files.put("/me/drive/root:/old.txt:/content", data=b"same bytes").json()
    renamed = files.patch(f"/me/drive/items/{item['id']}", json={"name": "new.txt"})
    assert renamed.status_code == 200
    assert renamed.json()["name"] == "new.txt"
    assert renamed.json()["eTag"] != item["eTag"] and renamed.json()["cTag"] == item["cTag"]
    stale = files.patch(f"/me/drive/items/{item['id']}", json={"name": "newer.txt"},
                        headers={"If-Match": item["eTag"]})
    assert stale.status_code == 412


def test_delete_removes_the_item_and_what_the_folder_held(files, sim, sim_user):
    inner = seed(sim, sim_user, "Old/inner.txt", "x")
    folder = files.get("/me/drive/root:/Old").json()
    assert files.delete(f"/me/drive/items/{folder['id']}").status_code == 204
    assert files.get(f"/me/drive/items/{folder['id']}").status_code == 404
    gone = files.get(f"/me/drive/items/{inner['id']}")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "itemNotFound"
    assert files.get("/me/drive/root:/Old/inner.txt:").status_code == 404
    assert files.delete("/me/drive/items/root").status_code == 403


def test_reading_needs_a_files_scope_and_writing_a_write_scope(graphsim, confidential_app, sign_in, sim_user):
    mail_only = graph_for(graphsim, confidential_app, sign_in, sim_user["userPrincipalName"],
                          ["User.Read", "Mail.Read"])
    denied = mail_only.get("/me/drive/root")
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "accessDenied"
    for scope in ("Files.Read", "Files.Read.All"):
        reader = graph_for(graphsim, confidential_app, sign_in, sim_user["userPrincipalName"], ["User.Read", scope])
        assert reader.get("/me/drive/root/children").status_code == 200
        write = reader.put("/me/drive/root:/x.txt:/content", data=b"x")
        assert write.status_code == 403 and write.json()["error"]["code"] == "accessDenied"
    writer = graph_for(graphsim, confidential_app, sign_in, sim_user["userPrincipalName"],
                       ["User.Read", "Files.ReadWrite"])
    assert writer.put("/me/drive/root:/x.txt:/content", data=b"x").status_code == 201


def test_another_users_drive_is_not_reachable(files, sim):
    other = sim.post("/users", json={"userPrincipalName": f"other-{uuid.uuid4().hex[:8]}@contoso.test"}).json()
    other_drive = sim.get(f"/users/{other['id']}/drive").json()
    assert files.get(f"/drives/{other_drive['id']}/root").status_code == 403
    assert files.get(f"/users/{other['id']}/drive/root").status_code == 403
    assert files.get("/drives/b!unknown/root").status_code == 404


def test_bad_paths_and_names_answer_400_or_404(files):
    assert files.get("/me/drive/root:/missing/file.txt:").status_code == 404
    assert files.get("/me/drive/items/01NOTANITEM").status_code == 404
    bad = files.put("/me/drive/root:/a%3Fb.txt:/content", data=b"x")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalidRequest"
    assert files.get("/me/drive/root/unknownAction").status_code == 400


def test_names_beyond_ascii_upload_list_and_download(files):
    name = "Überblick – Q3 ✓.txt"
    created = files.put(f"/me/drive/root:/{name}:/content", data="grüße".encode())
    assert created.status_code == 201 and created.json()["name"] == name
    assert [i["name"] for i in files.get("/me/drive/root/children").json()["value"]] == [name]
    download = files.get(f"/me/drive/items/{created.json()['id']}/content")
    assert download.status_code == 200 and download.content == "grüße".encode()
    assert "UTF-8''" in download.headers["Content-Disposition"]


def test_a_generated_file_is_made_by_the_simulator_and_served_in_full_and_in_ranges(files, sim, sim_user):
    size = 3 * 1024 * 1024 + 17  # several of the server's write pieces, and not a multiple of them
    item = seed(sim, sim_user, "Big/generated.bin", generate={"size": size, "seed": 7})
    again = seed(sim, sim_user, "Big/again.bin", generate={"size": size, "seed": 7})
    other = seed(sim, sim_user, "Big/other.bin", generate={"size": 64, "seed": 8})

    whole = files.get(f"/me/drive/items/{item['id']}/content")
    same = sim.get(f"/users/{sim_user['id']}/drive/items/{again['id']}/content")
    part = files.get(f"/me/drive/items/{item['id']}/content", headers={"Range": f"bytes={size - 20}-"})

    assert item["size"] == size and whole.status_code == 200 and len(whole.content) == size
    assert whole.content == same.content and item["file"]["hashes"]["quickXorHash"] == again["file"]["hashes"][
        "quickXorHash"]
    assert files.get(f"/me/drive/items/{other['id']}/content").content != whole.content[:64]
    assert part.status_code == 206 and part.content == whole.content[-20:]


@pytest.mark.parametrize("spec", [{"size": -1}, {"size": "10"}, {"size": 10, "seed": "x"}, 5,
                                  {"size": 3 * 1024 * 1024 * 1024}])
def test_a_bad_generate_is_400(sim, sim_user, spec):
    response = sim.post(f"/users/{sim_user['id']}/drive/items", json={"path": "x.bin", "generate": spec})
    assert response.status_code == 400 and "generate" in response.json()["error"]["message"]
