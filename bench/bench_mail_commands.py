"""200 mail commands for one mailbox, through the whole local stack: the time and the Graph requests.

Starts the local stack on free ports (Azurite, Key Vault emulator, Graph simulator, devhost
running ``function_app``), connects a simulated mailbox through the real flow, puts 200
mails in its inbox, then:

1. puts 200 ``move`` commands (to the archive) on ``mail-commands`` at once and times them
   until the 200 results are read from ``mail-command-results``; the simulator's request log
   (``GET /_sim/requests``) gives the Graph requests they took (``$batch`` requests and the
   requests inside them);
2. for comparison, moves 200 other mails without batching, through the HTTP route
   (``POST /api/accounts/{id}/messages/{id}/move``), 4 at a time as Outlook allows one
   mailbox: one Graph request per move.

Every Graph request is slowed by ``graphLatencyMs`` (50 ms by default: the simulator
answers on loopback, Graph does not). Target: the 200 commands within 30 s.

    python bench/bench_mail_commands.py [--commands 200] [--latency-ms 50]
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devstack.demo import Endpoints, connect, create_user  # noqa: E402
from devstack.stack import LocalStack  # noqa: E402

TARGET_SECONDS = 30.0
SETTINGS = {"RENEWAL_SCHEDULE": "0 0 0 1 1 *", "MAIL_ACTIONS_ENABLED": "true"}


def send_mails(stack: LocalStack, user_id: str, count: int, prefix: str) -> list[str]:
    ids = []
    for n in range(count):
        sent = stack.sim("POST", f"/_sim/users/{user_id}/messages", json={"subject": f"{prefix} {n}", "body": "x"})
        ids.append(str(sent["immutableId"]))
    return ids


def graph_requests(stack: LocalStack, user_id: str) -> list[dict[str, Any]]:
    return [r for r in stack.sim("GET", "/_sim/requests")["value"] if r.get("userId") == user_id]


def run_commands(stack: LocalStack, account_id: str, ids: list[str]) -> float:
    from azure.storage.queue import QueueClient, TextBase64EncodePolicy

    commands = QueueClient.from_connection_string(
        stack.storage_connection, "mail-commands", message_encode_policy=TextBase64EncodePolicy()
    )
    results = QueueClient.from_connection_string(stack.storage_connection, "mail-command-results")
    for client in (commands, results):
        try:
            client.create_queue()
        except Exception:  # noqa: BLE001,S110 - it exists already
            pass
    wanted = {f"bench-{uuid.uuid4()}": m for m in ids}
    bodies = [json.dumps({"id": c, "accountId": account_id, "messageId": m, "action": "move",
                          "destination": "archive"}) for c, m in wanted.items()]
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(commands.send_message, bodies))
    seen: dict[str, str] = {}
    while len(seen) < len(wanted):
        if time.monotonic() - started > 120:
            raise SystemExit(f"only {len(seen)} of {len(wanted)} results after 120 s")
        for message in results.receive_messages(messages_per_page=32, visibility_timeout=30):
            event = json.loads(base64.b64decode(message.content))
            if event["subject"] in wanted:
                seen[event["subject"]] = event["type"]
            results.delete_message(message)
    elapsed = time.monotonic() - started
    failed = [c for c, t in seen.items() if not t.endswith(".succeeded")]
    if failed:
        raise SystemExit(f"{len(failed)} commands failed")
    return elapsed


def run_route(stack: LocalStack, account_id: str, ids: list[str]) -> float:
    import requests

    session = requests.Session()
    session.trust_env = False
    headers = {"x-functions-key": stack.function_key}
    base = f"{stack.devhost_url}/api/accounts/{quote(account_id, safe='')}/messages"

    def move(message_id: str) -> None:
        response = session.post(f"{base}/{quote(message_id, safe='')}/move", json={"destination": "archive"},
                                headers=headers, timeout=60)
        if response.status_code != 200:
            raise SystemExit(f"a move failed: {response.status_code} {response.text[:200]}")

    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(move, ids))
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commands", type=int, default=200)
    parser.add_argument("--latency-ms", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir, \
            LocalStack.on_free_ports(Path(data_dir), extra_settings=SETTINGS) as stack:
        endpoints = Endpoints(stack.devhost_url, stack.graphsim_url, str(stack.ca_file), stack.storage_connection)
        session = endpoints.session()
        user = create_user(endpoints, session, "bench")
        if connect(endpoints, session, user["userPrincipalName"]).status_code != 200:
            raise SystemExit("connect failed")
        account_id = f"{user['id']}.{user['tenantId']}"
        stack.sim("PUT", "/_sim/settings", json={"graphLatencyMs": args.latency_ms})
        # One read first, so that both runs start with a warm token and folder names.
        warm = send_mails(stack, user["id"], 1, "warm")[0]
        run_route(stack, account_id, [warm])

        batched_ids = send_mails(stack, user["id"], args.commands, "batched")
        stack.sim("DELETE", "/_sim/requests")
        batched_seconds = run_commands(stack, account_id, batched_ids)
        batched = graph_requests(stack, user["id"])
        batches = [r for r in batched if r["path"].endswith("$batch")]
        inner = sum(len(r.get("requests", [])) for r in batches)
        throttled = sum(1 for r in batches for i in r.get("requests", []) if i["status"] == 429)

        plain_ids = send_mails(stack, user["id"], args.commands, "plain")
        stack.sim("DELETE", "/_sim/requests")
        plain_seconds = run_route(stack, account_id, plain_ids)
        plain = graph_requests(stack, user["id"])
        plain_moves = [r for r in plain if r["path"].endswith("/move")]

    other = len(batched) - len(batches)
    print(f"{args.commands} move commands for one mailbox via mail-commands, Graph latency {args.latency_ms} ms:")
    print(f"  batched:   {batched_seconds:6.2f} s until the last result; {len(batches)} Graph requests "
          f"($batch, carrying {inner} requests, at most "
          f"{max((len(b.get('requests', [])) for b in batches), default=0)} each; {throttled} throttled inside and "
          f"sent again)")
    print(f"  unbatched: {len(plain_moves)} Graph requests, one per move (through the move route, 4 at a time: "
          f"{plain_seconds:.2f} s)")
    print(f"  beside them: {other} and {len(plain) - len(plain_moves)} delta requests of the sync the moves' "
          "notifications started")
    print(f"  {len(plain_moves) / max(1, len(batches)):.1f}x fewer requests with batching; "
          f"target {TARGET_SECONDS:.0f} s: {'met' if batched_seconds < TARGET_SECONDS else 'MISSED'}")


if __name__ == "__main__":
    main()
