"""File edited -> ``driveItem.updated`` CloudEvent on ``drive-events``, through the whole local stack,
next to polling the drive's delta every 5 minutes.

Starts the local stack on free ports (Azurite, Key Vault emulator, Graph simulator,
devhost running ``function_app``) with ``GRAPH_SCOPES=User.Read Files.ReadWrite.All``,
seeds a document in a simulated user's OneDrive, connects the user through the real flow,
then edits the document as the user would (``PUT /_sim/users/{u}/drive/items/{id}/content``
on the simulator's control API) once at a time, and times each edit from the moment it is
made until its ``com.microsoft.graph.driveItem.updated`` event (the item's id as subject,
the edit's eTag in its data) is read from ``drive-events`` (as a consumer polling every
10 ms would).

The alternative a product would otherwise pick: poll the same drive delta every 5
minutes. A change lands at a uniformly random moment of the interval, so it waits for the
next poll 150 s on average (p50), 285 s at p95, plus the poll round itself; the round's
cost is measured here on the simulator with the account's own token, as such a poller
would run it: ``GET`` the saved deltaLink after one edit, through every page, to the new
deltaLink (Graph's drive delta: https://learn.microsoft.com/graph/api/driveitem-delta).

The push part needs the drive-events pipeline (a drive subscription at connect, the drive
delta sync publishing ``driveItem.*`` events): without it the polling part still runs and
prints, and the bench then exits 1 saying what is missing. The last line is one JSON
object with every figure.

    python bench/bench_drive_latency.py [--edits 30] [--gap 0.3] [--rounds 15]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from bench.support import access_token  # noqa: E402
from devstack.demo import MailEventReader  # noqa: E402
from devstack.stack import LocalStack  # noqa: E402
from tests.support.stack import connect_user, new_user  # noqa: E402

DRIVE_EVENT_QUEUE = "drive-events"
DRIVE_EVENT_PREFIX = "com.microsoft.graph.driveItem."
UPDATED = DRIVE_EVENT_PREFIX + "updated"
POLL_INTERVAL_S = 300.0
DRIVE_ROOT = "/me/drive/root"
EVENT_TIMEOUT_S = 20.0
SUBSCRIPTION_TIMEOUT_S = 20.0


class PushUnavailable(RuntimeError):
    """The build has no drive-events pipeline (or it did not deliver)."""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def control(stack: LocalStack) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.verify = str(stack.ca_file)
    return session


def edit(sim: requests.Session, stack: LocalStack, user_id: str, item_id: str, n: int) -> dict[str, Any]:
    response = sim.put(f"{stack.graphsim_url}/_sim/users/{user_id}/drive/items/{item_id}/content",
                       data=f"plan, revision {n}\n".encode(), timeout=15)
    response.raise_for_status()
    return dict(response.json())


def delta_round(graph: requests.Session, link: str) -> tuple[str, int]:
    """One poll: every page from ``link`` to the next deltaLink; (that link, items seen)."""
    seen = 0
    while True:
        response = graph.get(link, timeout=30)
        response.raise_for_status()
        page = response.json()
        seen += len(page.get("value", []))
        if "@odata.nextLink" in page:
            link = page["@odata.nextLink"]
            continue
        return str(page["@odata.deltaLink"]), seen


def measure_polling(stack: LocalStack, account_id: str, user_id: str, item_id: str, rounds: int) -> dict[str, Any]:
    """The cost of one 5-minute poll round, measured: the drive's delta from a saved
    deltaLink after an edit, as a poller would run it every interval."""
    graph = requests.Session()
    graph.trust_env = False
    graph.verify = str(stack.ca_file)
    graph.headers["Authorization"] = f"Bearer {access_token(stack, account_id)}"
    sim = control(stack)
    link, _ = delta_round(graph, f"{stack.graphsim_url}/v1.0{DRIVE_ROOT}/delta")  # the poller's first sync
    durations, seen = [], []
    for n in range(rounds):
        edit(sim, stack, user_id, item_id, 10_000 + n)
        started = time.perf_counter()
        link, items = delta_round(graph, link)
        durations.append((time.perf_counter() - started) * 1000)
        seen.append(items)
    round_p50 = percentile(durations, 0.5)
    return {
        "poll_round_ms_p50": round(round_p50, 1),
        "poll_round_ms_p95": round(percentile(durations, 0.95), 1),
        "poll_items_per_round": statistics.median(seen),
        # a change waits for the next poll: uniform over the interval, then the round runs
        "poll_delay_ms_p50": round(POLL_INTERVAL_S * 0.50 * 1000 + round_p50, 1),
        "poll_delay_ms_p95": round(POLL_INTERVAL_S * 0.95 * 1000 + round_p50, 1),
        "poll_rounds_per_day": int(86_400 / POLL_INTERVAL_S),
    }


def wait_for_drive_subscription(sim: requests.Session, stack: LocalStack, user_id: str) -> None:
    deadline = time.monotonic() + SUBSCRIPTION_TIMEOUT_S
    while time.monotonic() < deadline:
        live = sim.get(f"{stack.graphsim_url}/_sim/subscriptions", timeout=15).json()["value"]
        if any(s.get("userId") == user_id and s.get("resource") == DRIVE_ROOT for s in live):
            return
        time.sleep(0.2)
    raise PushUnavailable(
        f"the connect made no drive subscription ({DRIVE_ROOT}) within {SUBSCRIPTION_TIMEOUT_S:.0f} s: this build "
        "has no drive-events pipeline (drive subscription at connect, drive delta sync publishing driveItem.* "
        f"events on {DRIVE_EVENT_QUEUE})"
    )


def measure_push(stack: LocalStack, user_id: str, item_id: str, edits: int, gap: float) -> dict[str, Any]:
    sim = control(stack)
    wait_for_drive_subscription(sim, stack, user_id)
    reader = MailEventReader(stack.storage_connection, DRIVE_EVENT_QUEUE)
    # The connect's first drive round (queued on mail-sync) tells of the document as created:
    # the edits start once it has, so none races that round.
    deadline = time.monotonic() + EVENT_TIMEOUT_S
    while time.monotonic() < deadline and not any(e.get("subject") == item_id for e in reader.poll()):
        time.sleep(0.05)
    latencies: list[float] = []
    for n in range(edits + 1):
        started = time.perf_counter()
        etag = edit(sim, stack, user_id, item_id, n)["eTag"]
        arrived = None
        deadline = started + EVENT_TIMEOUT_S
        while arrived is None and time.perf_counter() < deadline:
            for event in reader.poll():
                data = event.get("data") or {}
                if event.get("subject") != item_id:
                    continue
                if n == 0 and str(event.get("type", "")).startswith(DRIVE_EVENT_PREFIX):
                    # The warm-up edit may land before the connect's first drive round, which
                    # then tells of the document as created, with this edit in it.
                    arrived = time.perf_counter()
                elif event.get("type") == UPDATED and data.get("eTag") == etag:
                    arrived = time.perf_counter()
            if arrived is None:
                time.sleep(0.01)
        if arrived is None:
            raise PushUnavailable(
                f"edit {n} gave no {UPDATED} event for the item on {DRIVE_EVENT_QUEUE} within {EVENT_TIMEOUT_S:.0f} s"
            )
        if n:  # the first edit also waits for the connect's first drive round: a warm-up
            latencies.append((arrived - started) * 1000)
        time.sleep(gap)
    return {
        "edits": len(latencies),
        "push_ms_p50": round(percentile(latencies, 0.5), 1),
        "push_ms_p95": round(percentile(latencies, 0.95), 1),
        "push_ms_mean": round(statistics.fmean(latencies), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--edits", type=int, default=30)
    parser.add_argument("--gap", type=float, default=0.3, help="pause between an event and the next edit")
    parser.add_argument("--rounds", type=int, default=15, help="poll rounds measured")
    args = parser.parse_args()
    figures: dict[str, Any] = {}
    problem = None
    with tempfile.TemporaryDirectory() as data_dir:
        settings = {"RENEWAL_SCHEDULE": "0 0 0 1 1 *", "GRAPH_SCOPES": "User.Read Files.ReadWrite.All",
                    "MAIL_ACTIONS_ENABLED": "false"}
        with LocalStack.on_free_ports(Path(data_dir), extra_settings=settings) as stack:
            user = new_user(stack, "editor")
            item = stack.sim("POST", f"/_sim/users/{user['id']}/drive/items",
                             json={"path": "Documents/plan.docx", "content": "plan, first draft\n"})
            page = connect_user(stack, user["userPrincipalName"])
            if page.status_code != 200:
                raise SystemExit(f"connect failed: {page.status_code}")
            account_id = f"{user['id']}.{user['tenantId']}"
            try:
                figures.update(measure_push(stack, user["id"], item["id"], args.edits, args.gap))
            except PushUnavailable as error:
                problem = str(error)
            figures.update(measure_polling(stack, account_id, user["id"], item["id"], args.rounds))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    figures["load"] = round(load, 1)
    print(f"file edited -> driveItem.updated CloudEvent read ({os.cpu_count()} CPU(s), load {load:.1f})")
    print(f"{'':22}{'push (this)':>14}{'5-min delta polling':>22}")
    push50 = f"{figures['push_ms_p50']:,.0f}" if "push_ms_p50" in figures else "n/a"
    push95 = f"{figures['push_ms_p95']:,.0f}" if "push_ms_p95" in figures else "n/a"
    print(f"{'p50 (ms)':22}{push50:>14}{figures['poll_delay_ms_p50']:>22,.0f}")
    print(f"{'p95 (ms)':22}{push95:>14}{figures['poll_delay_ms_p95']:>22,.0f}")
    print(f"one poll round (delta from the saved link, after an edit): p50 {figures['poll_round_ms_p50']:.1f} ms, "
          f"p95 {figures['poll_round_ms_p95']:.1f} ms, {figures['poll_items_per_round']:g} item(s); "
          f"{figures['poll_rounds_per_day']} rounds a day per drive, changed or not")
    if "push_ms_p50" in figures:
        figures["speedup_p50"] = round(figures["poll_delay_ms_p50"] / figures["push_ms_p50"], 1)
        print(f"speed-up over polling at p50: {figures['speedup_p50']:,.0f}x over {figures['edits']} edits")
    if problem:
        figures["push_error"] = problem
        print(f"push part FAILED: {problem}", file=sys.stderr)
    print(json.dumps(figures))
    if problem:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
