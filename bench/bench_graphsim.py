"""Throughput of the Graph simulator: Graph requests per second over keep-alive sessions.

Runs ``python -m devstack.graphsim`` in its own process on a free port (so the client
threads here do not share its interpreter lock), signs in with client credentials, and
has several threads read mail through keep-alive ``requests.Session``s for a few seconds.

    python bench/bench_graphsim.py [--seconds 5] [--threads 8] [--users 4]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devstack.graphsim import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--users", type=int, default=4)
    args = parser.parse_args()

    port = free_port()
    cert_dir = tempfile.mkdtemp(prefix="graphsim-bench-")
    env = dict(os.environ, GRAPHSIM_PORT=str(port), GRAPHSIM_HOST="127.0.0.1", DEVSTACK_CERT_DIR=cert_dir,
               GRAPHSIM_LOG_LEVEL="WARNING", PYTHONPATH=str(ROOT))
    process = subprocess.Popen([sys.executable, "-m", "devstack.graphsim"], env=env, cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"https://127.0.0.1:{port}"
    ca = str(Path(cert_dir) / "ca.pem")
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if requests.get(f"{base}/_sim/health", verify=ca, timeout=1).status_code == 200:
                    break
            except (requests.RequestException, OSError):
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit("the simulator did not start")
            time.sleep(0.1)
        control = requests.Session()
        control.verify = ca
        os.environ["REQUESTS_CA_BUNDLE"] = ca  # requests prefers this variable to Session.verify
        control.put(f"{base}/_sim/settings", json={"mailboxBudget": 10**9}).raise_for_status()
        users = []
        for i in range(args.users):
            user = control.post(f"{base}/_sim/users", json={"userPrincipalName": f"bench{i}@contoso.test"}).json()
            for n in range(20):
                control.post(f"{base}/_sim/users/{user['id']}/messages", json={"subject": f"m{n}"}).raise_for_status()
            users.append(user["id"])
        token = control.post(f"{base}/common/oauth2/v2.0/token", data={
            "grant_type": "client_credentials", "client_id": DEFAULT_CLIENT_ID,
            "client_secret": DEFAULT_CLIENT_SECRET, "scope": "https://graph.microsoft.com/.default",
        }).json()["access_token"]

        counts = {"ok": 0, "throttled": 0, "other": 0}
        lock = threading.Lock()
        stop_at = time.monotonic() + args.seconds

        def worker(index: int) -> None:
            session = requests.Session()
            session.trust_env = False  # no proxy/CA lookups in os.environ on every request: measure the server
            session.verify = ca
            session.headers["Authorization"] = f"Bearer {token}"
            user_id = users[index % len(users)]
            urls = [f"{base}/v1.0/users/{user_id}/mailFolders/inbox/messages?$top=5&$select=subject",
                    f"{base}/v1.0/users/{user_id}",
                    f"{base}/v1.0/users/{user_id}/mailFolders('inbox')"]
            ok = throttled = other = 0
            i = 0
            while time.monotonic() < stop_at:
                status = session.get(urls[i % len(urls)], timeout=10).status_code
                i += 1
                if status == 200:
                    ok += 1
                elif status == 429:
                    throttled += 1
                else:
                    other += 1
            with lock:
                counts["ok"] += ok
                counts["throttled"] += throttled
                counts["other"] += other

        started = time.monotonic()
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        total = sum(counts.values())
        print(f"graphsim: {total / elapsed:.0f} Graph requests/s "
              f"({total} in {elapsed:.1f} s, {args.threads} threads, {args.users} mailboxes; "
              f"200: {counts['ok']}, 429: {counts['throttled']}, other: {counts['other']})")
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()


if __name__ == "__main__":
    main()
