"""10,000 abandoned ``/api/connect`` starts leave no rows an hour later.

Starts the local stack on free ports with anonymous connect allowed and the devhost's
clock under libfaketime (Debian's ``faketime``), opens ``/api/connect`` N times without
ever coming back from Microsoft (each start writes one row to ``authflows``), moves the
devhost's clock an hour ahead, runs the purge timer through the devhost's admin API and
waits until ``authflows`` is empty. Prints the time the starts took, what the purge
runs deleted (from the devhost's log), the time until the table was empty and the rows
left. The floor: the same number of
single-entity deletes from one thread, measured on the same Azurite in the same run.

    python bench/bench_purge.py [--starts 10000] [--threads 16]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from email.utils import parsedate_to_datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from devstack.stack import LocalStack  # noqa: E402

FAKETIME_LIBRARY = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")


def rows(connection: str, table: str) -> int:
    from azure.data.tables import TableServiceClient

    service = TableServiceClient.from_connection_string(connection)
    service.create_table_if_not_exists(table)
    return sum(1 for _ in service.get_table_client(table).list_entities(select=["RowKey"]))


def devhost_offset(url: str) -> float:
    answer = requests.get(f"{url}/admin/host/ping", timeout=10)
    return parsedate_to_datetime(answer.headers["Date"]).timestamp() - time.time()


def delete_floor(connection: str, count: int) -> float:
    """Seconds to insert-then-delete ``count`` one-entity partitions from one thread: the
    cost of a row per start, without the purge's query or its threads."""
    from azure.data.tables import TableServiceClient

    client = TableServiceClient.from_connection_string(connection).create_table_if_not_exists("purgefloor")
    for n in range(count):
        client.create_entity({"PartitionKey": f"p{n}", "RowKey": "r"})
    started = time.monotonic()
    for n in range(count):
        client.delete_entity(f"p{n}", "r")
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--starts", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args()
    if not FAKETIME_LIBRARY.exists():
        raise SystemExit("libfaketime is not installed: apt-get install faketime")
    with tempfile.TemporaryDirectory() as data_dir:
        clock = Path(data_dir) / "faketime"
        clock.write_text("+0\n")
        settings = {
            "RENEWAL_SCHEDULE": "0 0 0 1 1 *",
            "ALLOW_ANONYMOUS_CONNECT": "true",
            "LD_PRELOAD": str(FAKETIME_LIBRARY),
            "FAKETIME_TIMESTAMP_FILE": str(clock),
            "FAKETIME_CACHE_DURATION": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "FAKETIME_DONT_RESET": "1",
        }
        with LocalStack.on_free_ports(Path(data_dir), extra_settings=settings) as stack:
            session = requests.Session()

            def start(n: int) -> int:
                return session.get(
                    f"{stack.devhost_url}/api/connect", params={"login_hint": f"u{n}@contoso.test"},
                    allow_redirects=False, timeout=60,
                ).status_code

            began = time.monotonic()
            with ThreadPoolExecutor(max_workers=args.threads) as pool:
                statuses = list(pool.map(start, range(args.starts)))
            started_in = time.monotonic() - began
            assert set(statuses) == {302}, set(statuses)
            before = rows(stack.storage_connection, "authflows")

            clock.write_text("+3600\n")
            while abs(devhost_offset(stack.devhost_url) - 3600) > 3:
                time.sleep(0.25)
            assert stack.log_dir is not None
            log = stack.log_dir / "devhost.log"
            purged = re.compile(r"purge: authflows=(\d+) connectsessions=(\d+)")
            # The timer may also run on its own (every 10 minutes) while the clock moves:
            # every run after the admin call counts, and the end is an empty table.
            runs_before = len(purged.findall(log.read_text(errors="replace")))
            fired = time.monotonic()
            requests.post(f"{stack.devhost_url}/admin/functions/purge_expired_connects",
                          headers={"x-functions-key": stack.function_key}, json={}, timeout=30).raise_for_status()
            while True:
                runs = purged.findall(log.read_text(errors="replace"))[runs_before:]
                if runs and rows(stack.storage_connection, "authflows") == 0:
                    break
                time.sleep(0.5)
            waited = time.monotonic() - fired
            deleted = sum(int(flows) for flows, _ in runs)
            after = rows(stack.storage_connection, "authflows")
            floor = delete_floor(stack.storage_connection, min(args.starts, 2000)) * args.starts / min(args.starts, 2000)

    print(f"{args.starts} abandoned /api/connect starts in {started_in:.1f} s ({args.threads} threads): "
          f"{before} rows in authflows")
    print(f"an hour later, the purge timer ({len(runs)} run(s)) deleted {deleted} flows; "
          f"{waited:.1f} s from the admin call to an empty table; {after} rows left")
    print(f"floor: {args.starts} single-entity deletes from one thread, {floor:.1f} s "
          f"(purge {waited / floor:.2f}x of it)")
    if after:
        raise SystemExit("rows left after the purge")


if __name__ == "__main__":
    main()
