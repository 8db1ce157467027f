"""Mail created -> CloudEvent on ``mail-events``, through the whole local stack.

Starts the local stack on free ports (Azurite, Key Vault emulator, Graph simulator,
devhost running ``function_app``), connects a simulated mailbox through the real flow,
then sends mails one at a time and times each from the moment it is sent to the
simulator until its ``message.created`` event is read from the queue (as a consumer
polling every 10 ms would). Printed next to what it replaces: polling every 5 minutes,
150 s on average. Targets: p50 < 250 ms, p95 < 1 s. The simulator's own log gives the
part spent before our webhook answered (Graph's delivery, out of our hands).

    python bench/bench_latency.py [--mails 40] [--gap 0.3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devstack.demo import (  # noqa: E402
    Endpoints,
    MailEventReader,
    connect,
    create_user,
    send_mail,
    wait_for_subscription,
)
from devstack.stack import LocalStack  # noqa: E402

POLLING_AVERAGE_MS = 150_000.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mails", type=int, default=40)
    parser.add_argument("--gap", type=float, default=0.3, help="pause between an event and the next mail")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        settings = {"RENEWAL_SCHEDULE": "0 0 0 1 1 *"}  # no timer during the run
        with LocalStack.on_free_ports(Path(data_dir), extra_settings=settings) as stack:
            endpoints = Endpoints(
                stack.devhost_url, stack.graphsim_url, str(stack.ca_file), stack.storage_connection
            )
            session = endpoints.session()
            user = create_user(endpoints, session, "latency")
            page = connect(endpoints, session, user["userPrincipalName"])
            if page.status_code != 200:
                raise SystemExit(f"connect failed: {page.status_code}")
            wait_for_subscription(endpoints, session, user["id"])
            reader = MailEventReader(endpoints.storage)
            latencies: list[float] = []
            lost = 0
            for n in range(args.mails + 1):
                started = time.perf_counter()
                message_id = send_mail(endpoints, session, user["id"], f"latency {n}")
                deadline = started + 10
                arrived = None
                while arrived is None and time.perf_counter() < deadline:
                    for event in reader.poll():
                        if event.get("subject") == message_id and event["type"].endswith(".created"):
                            arrived = time.perf_counter()
                    if arrived is None:
                        time.sleep(0.01)
                if n == 0:
                    continue  # the first mail also pays the first token acquisition: a warm-up
                if arrived is None:
                    lost += 1
                else:
                    latencies.append((arrived - started) * 1000)
                time.sleep(args.gap)
            deliveries = session.get(f"{endpoints.graphsim}/_sim/deliveries", timeout=15).json()["value"]
    webhook = [
        d["endToEndMs"] for d in deliveries if d.get("kind") == "change" and d.get("endToEndMs") is not None
    ]
    p50, p95 = percentile(latencies, 0.50), percentile(latencies, 0.95)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"mail created -> CloudEvent read, {len(latencies)} mails, one at a time ({os.cpu_count()} CPU(s), load {load:.1f})"
    )
    print(f"{'':26}{'push (this)':>14}{'5-min polling':>16}")
    print(f"{'p50 (ms)':26}{p50:>14.0f}{POLLING_AVERAGE_MS:>16,.0f} (average)")
    print(f"{'p95 (ms)':26}{p95:>14.0f}{300_000:>16,.0f} (worst)")
    print(f"{'mean (ms)':26}{statistics.fmean(latencies):>14.0f}")
    if webhook:
        print(
            f"of which the simulator's delivery until our 202: p50 {percentile(webhook, 0.5):.0f} ms, "
            f"p95 {percentile(webhook, 0.95):.0f} ms"
        )
    print(f"speed-up over polling at p50: {POLLING_AVERAGE_MS / p50:,.0f}x; mails without an event: {lost}")
    print(
        "targets: p50 < 250 ms: {}; p95 < 1 s: {}".format(
            "met" if p50 < 250 else "MISSED", "met" if p95 < 1000 else "MISSED"
        )
    )


if __name__ == "__main__":
    main()
