"""Upload sessions in the simulator: Graph's byte-range protocol, its refusals, status, cancel, expiry."""

from __future__ import annotations

import datetime as dt
import os

import pytest
import requests

from devstack.graphsim.state import parse_graph_time

from .drive_helpers import graph_for, seed

CHUNK = 320 * 1024 * 4  # 1.25 MiB, a multiple of 320 KiB


@pytest.fixture
def files(graphsim, confidential_app, sign_in, sim_user):
    session = graph_for(graphsim, confidential_app, sign_in, sim_user["userPrincipalName"])
    yield session
    session.close()


def _session(files, path: str, **item: str) -> dict:
    body = {"item": item} if item else {}
    response = files.post(f"/me/drive/root:/{path}:/createUploadSession", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _put(url: str, data: bytes, start: int, total: int, ca: str) -> requests.Response:
    # no Authorization header: the upload URL is pre-authenticated (driveitem-createuploadsession, Remarks)
    return requests.put(url, data=data, headers={"Content-Range": f"bytes {start}-{start + len(data) - 1}/{total}"},
                        verify=ca, timeout=30)


def test_a_six_megabyte_file_goes_up_in_ranges_and_arrives_whole(files, sim, sim_user):
    payload = os.urandom(6 * 1024 * 1024)
    upload = _session(files, "Docs/big.docx")
    assert upload["nextExpectedRanges"] == ["0-"]
    assert parse_graph_time(upload["expirationDateTime"]) > dt.datetime.now(dt.UTC)
    url, ca = upload["uploadUrl"], files.verify
    statuses = []
    for start in range(0, len(payload), CHUNK):
        answer = _put(url, payload[start:start + CHUNK], start, len(payload), ca)
        statuses.append(answer.status_code)
        if start + CHUNK < len(payload):
            assert answer.json()["nextExpectedRanges"] == [f"{start + CHUNK}-{len(payload) - 1}"]
    assert statuses[:-1] == [202] * (len(statuses) - 1) and statuses[-1] == 201
    item = answer.json()
    assert item["name"] == "big.docx" and item["size"] == len(payload)
    assert files.get(f"/me/drive/items/{item['id']}/content").content == payload
    again = _put(url, payload[-CHUNK:], len(payload) - CHUNK, len(payload), ca)
    assert again.status_code == 400  # the session is complete
    session_id = url.rsplit("/", 1)[1]
    served = [r for r in sim.get("/requests").json()["value"] if r.get("uploadSession") == session_id]
    assert [(r["method"], r["contentRange"], r["status"]) for r in served][:2] == [
        ("PUT", f"bytes 0-{CHUNK - 1}/{len(payload)}", 202), ("PUT", f"bytes {CHUNK}-{2 * CHUNK - 1}/{len(payload)}", 202)]
    assert served[-1]["status"] == 400 and all(r["userId"] == sim_user["id"] for r in served)
    recorded = sim.get(f"/users/{sim_user['id']}/drive/uploads").json()["value"]
    mine = next(s for s in recorded if s["name"] == "big.docx")
    assert mine["state"] == "completed"
    assert [r["contentRange"] for r in mine["ranges"]][:2] == [f"bytes 0-{CHUNK - 1}/{len(payload)}",
                                                                f"bytes {CHUNK}-{2 * CHUNK - 1}/{len(payload)}"]


def test_overlapping_and_out_of_order_ranges_are_refused_and_the_status_says_what_is_missing(files):
    payload = os.urandom(3 * CHUNK)
    url, ca = _session(files, "ranges.bin")["uploadUrl"], files.verify
    assert _put(url, payload[:CHUNK], 0, len(payload), ca).status_code == 202
    overlap = _put(url, payload[CHUNK - 10:2 * CHUNK - 10], CHUNK - 10, len(payload), ca)
    assert overlap.status_code == 416 and overlap.json()["error"]["code"] == "invalidRange"
    assert overlap.json()["error"]["innerError"]["code"] == "fragmentOverlap"
    gap = _put(url, payload[2 * CHUNK:], 2 * CHUNK, len(payload), ca)
    assert gap.status_code == 416 and gap.json()["error"]["innerError"]["code"] == "fragmentOutOfOrder"
    status = requests.get(url, verify=ca, timeout=10).json()
    assert status["nextExpectedRanges"] == [f"{CHUNK}-{len(payload) - 1}"]
    assert _put(url, payload[CHUNK:2 * CHUNK], CHUNK, len(payload), ca).status_code == 202
    done = _put(url, payload[2 * CHUNK:], 2 * CHUNK, len(payload), ca)
    assert done.status_code == 201
    assert files.get(f"/me/drive/items/{done.json()['id']}/content").content == payload


def test_fragments_must_be_well_formed(files):
    url, ca = _session(files, "strict.bin")["uploadUrl"], files.verify
    no_range = requests.put(url, data=b"abc", verify=ca, timeout=10)
    assert no_range.status_code == 400
    odd = _put(url, b"x" * 1000, 0, 5000, ca)  # not the last fragment, not a multiple of 320 KiB
    assert odd.status_code == 400 and "320 KiB" in odd.json()["error"]["message"]
    short = requests.put(url, data=b"abc", headers={"Content-Range": "bytes 0-9/10"}, verify=ca, timeout=10)
    assert short.status_code == 400
    assert _put(url, b"y" * CHUNK, 0, 2 * CHUNK, ca).status_code == 202
    other_total = _put(url, b"y" * CHUNK, CHUNK, 3 * CHUNK, ca)
    assert other_total.status_code == 400


def test_a_cancelled_or_expired_session_is_gone(files, sim):
    upload = _session(files, "cancel.bin")
    ca = files.verify
    assert requests.delete(upload["uploadUrl"], verify=ca, timeout=10).status_code == 204
    assert requests.get(upload["uploadUrl"], verify=ca, timeout=10).status_code == 404
    assert _put(upload["uploadUrl"], b"abc", 0, 3, ca).status_code == 404
    assert files.get("/me/drive/root:/cancel.bin:").status_code == 404
    sim.put("/settings", json={"uploadSessionLifetimeSeconds": 0}).raise_for_status()
    expired = _session(files, "expired.bin")
    assert _put(expired["uploadUrl"], b"abc", 0, 3, ca).status_code == 404


def test_conflict_behaviour_of_sessions_is_fail_by_default(files, sim, sim_user):
    seed(sim, sim_user, "taken.txt", "old")
    refused = files.post("/me/drive/root:/taken.txt:/createUploadSession", json={})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "nameAlreadyExists"
    replace = _session(files, "taken.txt", **{"@microsoft.graph.conflictBehavior": "replace"})
    replaced = _put(replace["uploadUrl"], b"new", 0, 3, files.verify)
    assert replaced.status_code == 200 and replaced.json()["size"] == 3
    rename = _session(files, "taken.txt", **{"@microsoft.graph.conflictBehavior": "rename"})
    renamed = _put(rename["uploadUrl"], b"newer", 0, 5, files.verify)
    assert renamed.status_code == 201 and renamed.json()["name"] == "taken 1.txt"


def test_a_name_taken_during_the_session_fails_on_the_last_range_and_the_session_stays(files, sim, sim_user):
    upload = _session(files, "race.txt")
    seed(sim, sim_user, "race.txt", "someone was faster")
    conflict = _put(upload["uploadUrl"], b"mine", 0, 4, files.verify)
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "nameAlreadyExists"
    assert requests.get(upload["uploadUrl"], verify=files.verify, timeout=10).status_code == 200


def test_a_session_on_an_existing_item_replaces_its_content(files, sim, sim_user):
    item = seed(sim, sim_user, "existing.txt", "v1")
    response = files.post(f"/me/drive/items/{item['id']}/createUploadSession", json={})
    done = _put(response.json()["uploadUrl"], b"version two", 0, 11, files.verify)
    assert done.status_code == 200 and done.json()["id"] == item["id"]
    assert done.json()["cTag"] != item["cTag"]


def test_creating_a_session_needs_a_write_scope(graphsim, confidential_app, sign_in, sim_user):
    reader = graph_for(graphsim, confidential_app, sign_in, sim_user["userPrincipalName"], ["User.Read", "Files.Read"])
    assert reader.post("/me/drive/root:/x.bin:/createUploadSession", json={}).status_code == 403


def test_a_failed_fragment_is_lost_and_the_upload_resumes_from_the_status(files, sim, sim_user):
    payload = os.urandom(2 * CHUNK + 1000)
    url, ca = _session(files, "resume.bin")["uploadUrl"], files.verify
    assert _put(url, payload[:CHUNK], 0, len(payload), ca).status_code == 202
    assert sim.post(f"/users/{sim_user['id']}/drive/uploads/failures", json={"count": 1}).status_code == 204
    lost = _put(url, payload[CHUNK:2 * CHUNK], CHUNK, len(payload), ca)
    assert lost.status_code == 503 and lost.headers["Retry-After"] == "1"
    missing = requests.get(url, verify=ca, timeout=10).json()["nextExpectedRanges"][0]
    start = int(missing.split("-")[0])
    assert start == CHUNK  # the failed fragment's bytes were not kept
    assert _put(url, payload[start:2 * CHUNK], start, len(payload), ca).status_code == 202
    done = _put(url, payload[2 * CHUNK:], 2 * CHUNK, len(payload), ca)
    assert done.status_code == 201
    assert files.get(f"/me/drive/items/{done.json()['id']}/content").content == payload
    assert sim.post(f"/users/{sim_user['id']}/drive/uploads/failures", json={"count": 0}).status_code == 400


def test_defer_commit_is_refused_rather_than_ignored(files):
    refused = files.post("/me/drive/root:/later.bin:/createUploadSession", json={"deferCommit": True})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "notSupported"
