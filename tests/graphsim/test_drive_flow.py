"""The document tool's flow against the simulator alone, as a connector would run it:
subscribe to the drive root, upload a document through an upload session, the user edits
it in the browser, one notification, the delta names the item, the new bytes download."""

from __future__ import annotations

import datetime as dt
import os

import requests

from .drive_helpers import graph_for

CHUNK = 320 * 1024 * 10  # 3.125 MiB


def _delta_round(files, url: str) -> tuple[list[dict], str]:
    items: list[dict] = []
    while True:
        body = files.get(url).json()
        items += body["value"]
        if "@odata.deltaLink" in body:
            return items, body["@odata.deltaLink"]
        url = body["@odata.nextLink"]


def test_upload_edit_notify_delta_download(graphsim, confidential_app, sign_in, sim_user, sim, webhook):
    files = graph_for(graphsim, confidential_app, sign_in, sim_user["userPrincipalName"],
                      ["User.Read", "Files.ReadWrite.All"])
    expiry = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=42_000)).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")
    sub = files.post("/subscriptions", json={"changeType": "updated", "notificationUrl": webhook.url,
                                             "resource": "/me/drive/root", "expirationDateTime": expiry,
                                             "clientState": "tool"})
    assert sub.status_code == 201, sub.text
    assert files.post("/me/drive/root/children", json={"name": "Tool", "folder": {}}).status_code == 201
    assert webhook.wait_for(lambda: len(webhook.items()) == 1)
    _, delta_link = _delta_round(files, "/me/drive/root/delta?token=latest")

    document = os.urandom(6 * 1024 * 1024)
    upload = files.post("/me/drive/root:/Tool/contract.docx:/createUploadSession", json={}).json()
    for start in range(0, len(document), CHUNK):
        piece = document[start:start + CHUNK]
        answer = requests.put(upload["uploadUrl"], data=piece, verify=graphsim.ca_file, timeout=30,
                              headers={"Content-Range": f"bytes {start}-{start + len(piece) - 1}/{len(document)}"})
    assert answer.status_code == 201
    item = answer.json()
    assert webhook.wait_for(lambda: len(webhook.items()) == 2)
    created, delta_link = _delta_round(files, delta_link)
    assert [c["id"] for c in created if "file" in c] == [item["id"]]
    hash_before = created[-1]["file"]["hashes"]["quickXorHash"]

    edited = os.urandom(len(document))
    assert sim.put(f"/users/{sim_user['id']}/drive/items/{item['id']}/content", data=edited).status_code == 200
    assert webhook.wait_for(lambda: len(webhook.items()) == 3)
    note = webhook.items()[-1]
    assert note["clientState"] == "tool" and note["resource"] == "/me/drive/root" and "resourceData" not in note
    changed, delta_link = _delta_round(files, delta_link)
    mine = [c for c in changed if c["id"] == item["id"]]
    assert len(mine) == 1 and mine[0]["file"]["hashes"]["quickXorHash"] != hash_before
    assert mine[0]["lastModifiedBy"]["user"]["id"] == sim_user["id"] and "application" not in mine[0]["lastModifiedBy"]
    fresh = files.get(f"/me/drive/items/{item['id']}").json()
    assert fresh["cTag"] != item["cTag"]
    assert files.get(f"/me/drive/items/{item['id']}/content").content == edited

    sim.patch(f"/users/{sim_user['id']}/drive/items/{item['id']}", json={"name": "contract v2.docx"})
    assert webhook.wait_for(lambda: len(webhook.items()) == 4)
    renamed, delta_link = _delta_round(files, delta_link)
    assert [c["name"] for c in renamed if c["id"] == item["id"]] == ["contract v2.docx"]
    assert files.get(f"/me/drive/items/{item['id']}").json()["cTag"] == fresh["cTag"]

    assert files.delete(f"/me/drive/items/{item['id']}").status_code == 204
    assert webhook.wait_for(lambda: len(webhook.items()) == 5)
    deleted, _ = _delta_round(files, delta_link)
    assert [c.get("deleted") for c in deleted if c["id"] == item["id"]] == [{"state": "deleted"}]
    files.close()
