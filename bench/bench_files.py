"""Upload and download throughput of the files API, through the whole local stack.

Starts the local stack on free ports (Azurite, Key Vault emulator, Graph simulator,
devhost running ``function_app``) with ``GRAPH_SCOPES=User.Read Files.ReadWrite.All``,
connects a simulated user through the real flow, then moves a 1 MiB and a 6 MiB file
(the 6 MiB one through an upload session) up with ``PUT .../root:/{path}:/content`` and
down with ``GET .../items/{id}/content``. The floor is the same transfer made straight to
the simulator with the account's own access token, as a client of Graph would: a simple
``PUT`` for 1 MiB, an upload session in the same 5 MiB fragments for 6 MiB, and the
download URL Graph redirects to. Each figure is the median of ``--runs`` transfers; the
ratio says how much longer the files API takes than the floor.

A resumable upload (``--resumable-mb`` MiB, 24 by default) goes up as a product sends one:
``POST .../root:/{path}:/createUploadSession`` on the files API, then the file's 5 MiB
fragments to ``PUT .../uploads/{uploadId}``; its floor is the same session and fragments
sent straight to the simulator's upload URL.

Then the large download: a ``--large-mb`` MB file (300 by default, made by the simulator's
``generate``) read through the files API as a stream, next to the same file read straight
from its download URL, each read in 1 MiB pieces and hashed, never held; the median of
``--large-runs``, and how far the devhost's resident memory rose above where it was before
(its peak, VmHWM, reset first).

    python bench/bench_files.py [--runs 7] [--resumable-mb 24] [--large-mb 300] [--large-runs 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from bench.support import access_token  # noqa: E402
from devstack.stack import LocalStack  # noqa: E402
from shared.drive_files import UPLOAD_FRAGMENT_BYTES  # noqa: E402
from tests.support.stack import connect_user, function_key_headers, new_user  # noqa: E402

MIB = 1024 * 1024
SIZES = {"1 MiB": MIB, "6 MiB": 6 * MIB}


def median_seconds(action: Callable[[], None], runs: int) -> float:
    action()  # warm: connections, token, the simulator's first allocation
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def streamed_sha256(session: requests.Session, url: str, size: int) -> str:
    hasher, received = hashlib.sha256(), 0
    with session.get(url, stream=True, timeout=600) as response:
        response.raise_for_status()
        for piece in response.iter_content(MIB):
            hasher.update(piece)
            received += len(piece)
    assert received == size, (received, size)
    return hasher.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--resumable-mb", type=int, default=24)
    parser.add_argument("--large-mb", type=int, default=300)
    parser.add_argument("--large-runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        settings = {"RENEWAL_SCHEDULE": "0 0 0 1 1 *", "GRAPH_SCOPES": "User.Read Files.ReadWrite.All"}
        with LocalStack.on_free_ports(Path(data_dir), extra_settings=settings) as stack:
            user = new_user(stack, "bench")
            connect_user(stack, user["userPrincipalName"])
            account_id = f"{user['id']}.{user['tenantId']}"
            api = requests.Session()
            api.headers.update(function_key_headers(stack))
            base = f"{stack.devhost_url}/api/accounts/{account_id}/drive"
            graph = requests.Session()
            graph.trust_env = False
            graph.verify = str(stack.ca_file)
            graph.headers["Authorization"] = f"Bearer {access_token(stack, account_id)}"
            graph_base = f"{stack.graphsim_url}/v1.0/me/drive"
            files = requests.Session()  # the pre-authenticated URLs: no bearer token
            files.trust_env = False
            files.verify = str(stack.ca_file)

            rows = []
            for label, size in SIZES.items():
                data = bytes(i % 253 for i in range(size))
                path = f"bench/{size}.bin"
                item: dict[str, str] = {}

                def api_upload(data: bytes = data, path: str = path, item: dict[str, str] = item) -> None:
                    response = api.put(f"{base}/root:/{path}:/content", data=data, timeout=120)
                    response.raise_for_status()
                    item["id"] = response.json()["id"]

                def api_download(item: dict[str, str] = item, size: int = size) -> None:
                    response = api.get(f"{base}/items/{item['id']}/content", timeout=120)
                    response.raise_for_status()
                    assert len(response.content) == size

                def direct_upload(data: bytes = data, path: str = path) -> None:
                    if len(data) <= 4 * MIB:
                        graph.put(f"{graph_base}/root:/{path}.direct:/content", data=data,
                                  timeout=120).raise_for_status()
                        return
                    session_upload(graph, f"{graph_base}/root:/{path}.direct:", files, data)

                def direct_download(item: dict[str, str] = item, size: int = size) -> None:
                    redirect = graph.get(f"{graph_base}/items/{item['id']}/content", allow_redirects=False,
                                         timeout=60)
                    response = files.get(redirect.headers["Location"], timeout=120)
                    response.raise_for_status()
                    assert len(response.content) == size

                up_api = median_seconds(api_upload, args.runs)
                up_direct = median_seconds(direct_upload, args.runs)
                down_api = median_seconds(api_download, args.runs)
                down_direct = median_seconds(direct_download, args.runs)
                rows.append((label, "upload", size, up_api, up_direct))
                rows.append((label, "download", size, down_api, down_direct))

            resumable = bytes(i % 241 for i in range(args.resumable_mb * MIB))
            resumable_path = f"{base}/root:/bench/resumable.bin:"

            def api_resumable() -> None:
                session_upload(api, resumable_path, api, resumable, upload_base=f"{base}/uploads/")

            def direct_resumable() -> None:
                session_upload(graph, f"{graph_base}/root:/bench/resumable.bin.direct:", files, resumable)

            rows.append((f"{args.resumable_mb} MiB", "resumable", len(resumable),
                         median_seconds(api_resumable, args.runs), median_seconds(direct_resumable, args.runs)))

            large = large_download(stack, user, api, base, graph, graph_base, files, args.large_mb * 1000 * 1000,
                                   args.large_runs)

            print(f"files API through the local stack, median of {args.runs} transfers (floor: straight to the simulator)")
            print(f"{'file':>6} {'':9} {'files API':>18} {'floor':>18} {'ratio':>6}")
            for label, what, size, through, floor in rows:
                print(f"{label:>6} {what:9} {through * 1000:7.1f} ms {size / MIB / through:6.1f} MiB/s "
                      f"{floor * 1000:7.1f} ms {size / MIB / floor:6.1f} MiB/s {through / floor:5.2f}x")
            size, through, floor, grew = large
            print(f"{args.large_mb} MB streamed download, median of {args.large_runs}: files API {through:.2f} s "
                  f"({size / MIB / through:.1f} MiB/s), floor {floor:.2f} s ({size / MIB / floor:.1f} MiB/s), "
                  f"{through / floor:.2f}x; devhost resident memory rose {grew / 1024:.1f} MiB at most "
                  f"({size / MIB:.0f} MiB file)")
            print(json.dumps({"large_download_mb": args.large_mb, "api_seconds": round(through, 3),
                              "floor_seconds": round(floor, 3), "ratio": round(through / floor, 2),
                              "devhost_rss_growth_mib": round(grew / 1024, 1)}))


def session_upload(opener: requests.Session, item_url: str, sender: requests.Session, data: bytes,
                   *, upload_base: str | None = None) -> None:
    """Open an upload session at ``item_url`` (``.../root:/{path}:``) and send ``data`` in
    the connector's 5 MiB fragments: to Graph's ``uploadUrl`` or, with ``upload_base``, to
    the files API's ``uploads/{uploadId}``."""
    session = opener.post(f"{item_url}/createUploadSession", json={"item": {"@microsoft.graph.conflictBehavior":
                                                                            "replace"}}, timeout=60)
    session.raise_for_status()
    opened = session.json()
    url = f"{upload_base}{opened['uploadId']}" if upload_base else opened["uploadUrl"]
    for start in range(0, len(data), UPLOAD_FRAGMENT_BYTES):
        fragment = data[start:start + UPLOAD_FRAGMENT_BYTES]
        end = start + len(fragment) - 1
        sender.put(url, data=fragment, timeout=120,
                   headers={"Content-Range": f"bytes {start}-{end}/{len(data)}"}).raise_for_status()


def large_download(stack: LocalStack, user: dict[str, str], api: requests.Session, base: str,
                   graph: requests.Session, graph_base: str, files: requests.Session, size: int,
                   runs: int) -> tuple[int, float, float, int]:
    """(size, median seconds through the API, median seconds from the download URL, the
    devhost's largest rise of resident memory in KiB)."""
    item = stack.sim("POST", f"/_sim/users/{user['id']}/drive/items",
                     json={"path": "bench/large.bin", "generate": {"size": size, "seed": 1}})
    pid = next(child.process.pid for child in stack.children if child.name == "devhost")
    redirect = graph.get(f"{graph_base}/items/{item['id']}/content", allow_redirects=False, timeout=60)
    floor_times, api_times, grew, expected = [], [], 0, ""
    for _ in range(runs):
        started = time.perf_counter()
        expected = streamed_sha256(files, redirect.headers["Location"], size)
        floor_times.append(time.perf_counter() - started)
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM back to the current RSS
        before = memory_kib(pid, "VmRSS")
        started = time.perf_counter()
        got = streamed_sha256(api, f"{base}/items/{item['id']}/content", size)
        api_times.append(time.perf_counter() - started)
        grew = max(grew, memory_kib(pid, "VmHWM") - before)
        assert got == expected, "the bytes through the files API differ from the file"
    return size, statistics.median(api_times), statistics.median(floor_times), grew


if __name__ == "__main__":
    main()
