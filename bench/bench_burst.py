"""A burst of mail through the whole local stack: what one instance handles, and at what cost.

Starts the local stack on free ports (Azurite with its debug log, Key Vault emulator,
Graph simulator, one devhost running ``function_app``), connects ``--mailboxes``
simulated mailboxes through the real flow, warms each up with one mail (so tokens are
cached and the first delta round is behind us), then sends ``--mails`` mails spread over
the mailboxes as fast as the simulator takes them, from ``--senders`` threads (the rate
at which they were posted is printed as the intake the stack was offered). A consumer
polling ``mail-events`` (two threads, 32 messages a call) records when each mail's
``message.created`` CloudEvent arrives (the time of the receive that returned it, before
the consumer deletes what it received).

Printed:
- the time until every mail is an event, mails per second, p50/p95/p99 mail-to-event
  (from just before the mail was posted to the simulator until its event was read);
- CPU milliseconds per mail of each process of the stack (its whole process group, from
  /proc), measured over the burst alone;
- storage operations per mail, counted from Azurite's debug log (one line per request it
  served, whoever sent it; this consumer's own receives and deletes are left out), and
  Graph requests per mail, counted by the simulator (``GET /_sim/requests``);
- lost mails (no created event) and doubled ones (a second created event): either makes
  the exit code non-zero.

The last line is one JSON object with the figures. Next to the latency: polling every
5 minutes, what a product would otherwise do.

    python bench/bench_burst.py [--mailboxes 40] [--mails 400] [--senders 8] [--profile-devhost FILE]

``--profile-devhost FILE`` samples the devhost during the burst alone with py-spy
(a test dependency, in requirements-dev.txt; it needs ptrace rights) and writes its stacks, collapsed, to FILE:
where the devhost's CPU goes, by share. Sampling stops the process briefly each time, so a
profiled run's own figures (rate, latency, CPU) are not comparable with the others.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devstack.demo import Endpoints, connect, create_user, wait_for_subscription  # noqa: E402
from devstack.stack import LocalStack  # noqa: E402

POLLING_AVERAGE_MS = 150_000.0
MAIL_EVENTS = "mail-events"
_TICKS = os.sysconf("SC_CLK_TCK")
# One line per request Azurite serves: "...ContextMiddleware: RequestMethod=GET RequestURL=http://..."
_REQUEST_LINE = re.compile(rb"ContextMiddleware: RequestMethod=(\w+) RequestURL=(\S+)")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


# --- what each process spent -------------------------------------------------------------


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU of every live process in the process group ``pgid``."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:  # field 5 (pgrp), counted after the command name
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICKS


def cpu_by_part(stack: LocalStack) -> dict[str, float]:
    return {child.name: group_cpu_seconds(child.process.pid) for child in stack.children}


class StorageLog:
    """Counts the requests in Azurite's debug log between two marker requests.

    Azurite buffers its debug log, so the counting happens after the stack has stopped
    (Azurite flushes on exit); the markers are requests for two queues nobody else uses.
    """

    START, END = "bench-mark-start", "bench-mark-end"

    def __init__(self, path: Path, storage_connection: str = "") -> None:
        self.path = path
        self.connection = storage_connection

    def mark(self, name: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError
        from azure.storage.queue import QueueClient

        try:
            QueueClient.from_connection_string(self.connection, name).get_queue_properties()
        except ResourceNotFoundError:
            pass  # the request is the mark

    def count_between_marks(self) -> Counter[str]:
        text = self.path.read_bytes()
        start = text.find(f"/{self.START}".encode())
        end = text.find(f"/{self.END}".encode(), max(start, 0))
        if start < 0 or end < 0:
            raise SystemExit(f"the marks are missing from Azurite's debug log {self.path}")
        kinds: Counter[str] = Counter()
        for method, url in _REQUEST_LINE.findall(text[start:end]):
            path = url.split(b"?", 1)[0].decode("ascii", "replace")
            if self.START in path:
                continue
            # This benchmark's consumer receives and deletes on mail-events: not the connector's.
            if f"/{MAIL_EVENTS}/messages" in path and method in (b"GET", b"DELETE"):
                continue
            kinds[_kind(method.decode(), path)] += 1
        return kinds


def _kind(method: str, path: str) -> str:
    parts = [p for p in path.split("/") if p][3:]  # drop scheme, host and account
    if not parts:
        return f"{method} /"
    head = parts[0]
    if "(" in head:
        head = head.split("(", 1)[0]
        return f"{method} table {head}"
    if head == "$batch":
        return f"{method} table $batch"
    if len(parts) > 1 and parts[1] == "messages":
        return f"{method} queue {head}"
    return f"{method} {head}"


# --- the consumer ------------------------------------------------------------------------


class Consumer:
    """Reads ``mail-events`` from two threads and notes when each created event arrives."""

    def __init__(self, storage_connection: str) -> None:
        self._connection = storage_connection
        self.arrivals: dict[str, float] = {}
        self.created = Counter[str]()
        self.other = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(2)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _run(self) -> None:
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.queue import QueueClient

        client = QueueClient.from_connection_string(self._connection, MAIL_EVENTS)
        try:
            client.create_queue()
        except ResourceExistsError:
            pass  # the connector made it first
        while not self._stop.is_set():
            # One receive of up to 32 messages: all of them were read at the same moment
            # (the deletes that follow take time, and must not count as the pipeline's).
            messages = list(next(client.receive_messages(messages_per_page=32, visibility_timeout=60).by_page(), []))
            now = time.perf_counter()
            for message in messages:
                event = json.loads(base64.b64decode(message.content))
                with self._lock:
                    if str(event.get("type", "")).endswith(".created"):
                        subject = str(event.get("subject"))
                        self.created[subject] += 1
                        self.arrivals.setdefault(subject, now)
                    else:
                        self.other += 1
            for message in messages:
                client.delete_message(message)
            if not messages:
                time.sleep(0.01)


# --- the run -------------------------------------------------------------------------------


def post_mail(session: Any, graphsim: str, user_id: str, subject: str) -> tuple[str, float]:
    started = time.perf_counter()
    response = session.post(
        f"{graphsim}/_sim/users/{user_id}/messages",
        json={"subject": subject, "from": "sender@fabrikam.test", "body": f"This is {subject}."},
        timeout=30,
    )
    response.raise_for_status()
    return str(response.json()["immutableId"]), started  # the id the events carry


def graph_requests(session: Any, graphsim: str) -> int | None:
    response = session.get(f"{graphsim}/_sim/requests", timeout=30)
    if response.status_code == 404:
        return None
    response.raise_for_status()
    body = response.json()
    value = body.get("value", body) if isinstance(body, dict) else body
    return len(value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mailboxes", type=int, default=40)
    parser.add_argument("--mails", type=int, default=400)
    parser.add_argument("--senders", type=int, default=8, help="threads posting mail to the simulator")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--profile-devhost", metavar="FILE", help="py-spy stacks of the devhost during the burst")
    parser.add_argument(
        "--no-storage-count",
        action="store_true",
        help="run Azurite without its debug log (which costs it CPU): storage operations are not counted",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        if os.environ.get("BENCH_KEEP_LOGS"):
            data_dir = os.environ["BENCH_KEEP_LOGS"]
        debug_log = Path(data_dir) / "azurite-debug.log"
        settings = {"RENEWAL_SCHEDULE": "0 0 0 1 1 *"}  # no timer during the run
        log_path = None if args.no_storage_count else debug_log
        with LocalStack.on_free_ports(Path(data_dir), extra_settings=settings, azurite_debug_log=log_path) as stack:
            storage = StorageLog(debug_log, stack.storage_connection)
            result = run(stack, args, storage)
        return report(args, result, None if args.no_storage_count else storage.count_between_marks())


def run(stack: LocalStack, args: argparse.Namespace, storage: StorageLog) -> Burst:
    endpoints = Endpoints(stack.devhost_url, stack.graphsim_url, str(stack.ca_file), stack.storage_connection)
    session = endpoints.session()
    users = [create_user(endpoints, session, f"burst{n}") for n in range(args.mailboxes)]
    for user in users:
        page = connect(endpoints, session, user["userPrincipalName"])
        if page.status_code not in (200, 302):
            raise SystemExit(f"connect failed: {page.status_code}")
    for user in users:
        wait_for_subscription(endpoints, session, user["id"])

    consumer = Consumer(stack.storage_connection)
    consumer.start()
    # Warm-up: one mail per mailbox, so tokens are cached and connections open.
    with ThreadPoolExecutor(args.senders) as pool:
        warm = list(pool.map(lambda u: post_mail(session, endpoints.graphsim, u["id"], "warm-up")[0], users))
    _wait(lambda: all(m in consumer.arrivals for m in warm), 60, "the warm-up mails")
    time.sleep(2.0)  # let the warm-up's last rounds finish before the counters start

    session.delete(f"{endpoints.graphsim}/_sim/requests", timeout=30)
    session.delete(f"{endpoints.graphsim}/_sim/deliveries", timeout=30)
    storage.mark(storage.START)
    profiler = start_profiler(stack, args.profile_devhost)
    cpu_before = cpu_by_part(stack)
    started = time.perf_counter()
    plan = [(users[n % len(users)]["id"], f"burst {n}") for n in range(args.mails)]
    with ThreadPoolExecutor(args.senders) as pool:
        sent = list(pool.map(lambda p: post_mail(session, endpoints.graphsim, *p), plan))
    send_seconds = time.perf_counter() - started
    ids = {message_id for message_id, _ in sent}
    _wait(lambda: ids <= consumer.arrivals.keys(), args.timeout, "every mail's event", fail=False)
    finished = max((consumer.arrivals[m] for m in ids if m in consumer.arrivals), default=time.perf_counter())
    time.sleep(1.5)  # a doubled event would arrive now
    cpu_after = cpu_by_part(stack)
    stop_profiler(profiler)
    storage.mark(storage.END)
    graph = graph_requests(session, endpoints.graphsim)
    deliveries = session.get(f"{endpoints.graphsim}/_sim/deliveries", timeout=30).json().get("value", [])
    consumer.stop()
    return Burst(sent, consumer, send_seconds, started, finished, cpu_before, cpu_after, graph, deliveries)


def start_profiler(stack: LocalStack, output: str | None) -> subprocess.Popen[bytes] | None:
    if not output:
        return None
    devhost = next(child.process.pid for child in stack.children if child.name == "devhost")
    profiler = subprocess.Popen(
        [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(devhost), "--rate", "200",
         "--format", "raw", "--output", output, "--gil"],
    )
    time.sleep(1.0)  # py-spy attaches
    return profiler


def stop_profiler(profiler: subprocess.Popen[bytes] | None) -> None:
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)
        profiler.wait(timeout=30)


@dataclass
class Burst:
    sent: list[tuple[str, float]]
    consumer: Consumer
    send_seconds: float
    started: float
    finished: float
    cpu_before: dict[str, float]
    cpu_after: dict[str, float]
    graph: int | None
    deliveries: list[dict[str, Any]]


def report(args: argparse.Namespace, burst: Burst, counted: Counter[str] | None) -> int:
    ops = counted if counted is not None else Counter[str]()
    sent, consumer, send_seconds, graph = burst.sent, burst.consumer, burst.send_seconds, burst.graph
    cpu_before, cpu_after, started, finished = burst.cpu_before, burst.cpu_after, burst.started, burst.finished
    ids = {message_id for message_id, _ in sent}

    latencies = [(consumer.arrivals[m] - t0) * 1000 for m, t0 in sent if m in consumer.arrivals]
    lost = len(ids - consumer.arrivals.keys())
    doubled = sum(1 for m in ids if consumer.created[m] > 1)
    elapsed = finished - started
    mails = len(ids)
    cpu_ms = {name: (cpu_after.get(name, 0.0) - cpu_before.get(name, 0.0)) * 1000 / mails for name in cpu_after}
    storage_ops = sum(ops.values())
    load = os.getloadavg()[0]

    print(
        f"burst: {mails} mails over {args.mailboxes} mailboxes, posted in {send_seconds:.1f} s "
        f"({mails / send_seconds:.0f}/s offered), {os.cpu_count()} CPU(s), load {load:.1f}"
    )
    print(f"every mail an event after {elapsed:.1f} s: {mails / elapsed:.1f} mails/s")
    arrived = sorted(consumer.arrivals[m] - started for m in ids if m in consumer.arrivals)
    if arrived:
        print(
            "events read after (s): "
            + ", ".join(f"{int(q * 100)}% {percentile(arrived, q):.1f}" for q in (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0))
        )
    print(f"{'mail -> event (ms)':26}{'burst':>10}{'5-min polling':>16}")
    for label, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        print(f"{label:26}{percentile(latencies, q):>10.0f}{POLLING_AVERAGE_MS:>16,.0f} (average)")
    if latencies:
        print(f"{'mean':26}{statistics.fmean(latencies):>10.0f}")
    print("CPU ms per mail: " + ", ".join(f"{name} {value:.1f}" for name, value in cpu_ms.items()))
    if counted is None:
        print("storage operations per mail: not counted (--no-storage-count)")
    else:
        print(f"storage operations per mail: {storage_ops / mails:.2f} ({storage_ops} in all)")
    for kind, count in ops.most_common():
        print(f"    {kind:48}{count:>7}{count / mails:>8.2f}/mail")
    graph_text = f"{graph / mails:.2f} ({graph} in all)" if graph is not None else "not counted (no /_sim/requests)"
    print(f"Graph requests per mail: {graph_text}")
    posts = [d for d in burst.deliveries if d.get("kind") == "change"]
    if posts:
        answer = [float(d["latencyMs"]) for d in posts if d.get("latencyMs") is not None]
        items = sum(int(d.get("itemCount") or 0) for d in posts)
        delivered = [float(d["endToEndMs"]) for d in posts if d.get("endToEndMs") is not None]
        print(
            f"webhook: {len(posts)} POSTs of {items / len(posts):.1f} items, answered in "
            f"p50 {percentile(answer, 0.5):.0f} ms, p99 {percentile(answer, 0.99):.0f} ms; "
            f"mail to answered POST p50 {percentile(delivered, 0.5):.0f} ms, p99 {percentile(delivered, 0.99):.0f} ms"
        )
    print(f"lost: {lost}, doubled: {doubled}, other events: {consumer.other}")
    figures = {
        "mailboxes": args.mailboxes,
        "mails": mails,
        "seconds": round(elapsed, 2),
        "mails_per_s": round(mails / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.5)),
        "p95_ms": round(percentile(latencies, 0.95)),
        "p99_ms": round(percentile(latencies, 0.99)),
        "connector_cpu_ms_per_mail": round(cpu_ms.get("devhost", float("nan")), 2),
        "azurite_cpu_ms_per_mail": round(cpu_ms.get("azurite", float("nan")), 2),
        "graphsim_cpu_ms_per_mail": round(cpu_ms.get("graphsim", float("nan")), 2),
        "keyvault_cpu_ms_per_mail": round(cpu_ms.get("keyvault", float("nan")), 2),
        "storage_ops_per_mail": round(storage_ops / mails, 2) if counted is not None else None,
        "graph_requests_per_mail": round(graph / mails, 2) if graph is not None else None,
        "lost": lost,
        "doubled": doubled,
    }
    print(json.dumps(figures))
    return 1 if lost or doubled else 0


def _wait(check: Any, timeout: float, what: str, *, fail: bool = True) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            if fail:
                raise SystemExit(f"timed out waiting for {what}")
            return
        time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main())
