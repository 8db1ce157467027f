"""Renewal throughput: 10,000 subscriptions of 10,000 mailboxes renewed in one timer run.

Real Azurite (tables, expiry index) and the real adapters; the Graph simulator in its own
process (``python -m devstack.graphsim``, so it does not share this interpreter's lock),
every Graph call slowed by ``graphLatencyMs`` (50 ms by default). The simulator is seeded
through its control API (``POST /_sim/bulk``: users, their inbox subscriptions, one access
token each); the tables are seeded through the real stores. The connector's in-process
access-token cache is warmed with those tokens, so the figures are for renewal itself, not
for token refresh, which a cold instance would add per mailbox (an account read, a Key
Vault read, a token request).

Figures printed:
- the concurrent run (RENEWAL_CONCURRENCY threads): wall time, renewals per second;
- a strictly sequential run (one thread, one index read at a time) over a sample of the
  same kind of subscriptions, extrapolated to the full set (said so in the output);
- the peak resident memory of this process (``resource.getrusage``).

    python bench/bench_renewal.py [--subscriptions 10000] [--sample 300] [--latency-ms 50]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_SECONDS = 60.0
TARGET_SPEEDUP = 10.0
TARGET_PEAK_MB = 300.0


# --- the simulator's process --------------------------------------------------------------


def start_simulator(count: int, workdir: Path) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """``python -m devstack.graphsim`` on a free port, seeded through its control API
    (``POST /_sim/bulk``: users, their inbox subscriptions, one access token each)."""
    import requests

    from devstack.stack import free_port
    from shared.subscriptions import MAILBOX_CHANGE_TYPES, MAILBOX_RESOURCE

    port = free_port()
    child = subprocess.Popen(
        [sys.executable, "-m", "devstack.graphsim"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={
            **os.environ,
            "GRAPHSIM_PORT": str(port),
            "GRAPHSIM_LOG_LEVEL": "WARNING",
            "DEVSTACK_CERT_DIR": str(workdir / "certs"),
            "PYTHONPATH": str(ROOT),
        },
    )
    assert child.stdout is not None
    url = ca = ""
    for line in child.stdout:  # it prints where it listens and which CA to trust, then serves
        if line.startswith("graphsim listening on "):
            url = line.split()[3]
        elif line.startswith("trust CA: "):
            ca = line.removeprefix("trust CA: ").strip()
            break
    if not url or not ca:
        child.kill()
        raise SystemExit("the simulator did not start")
    expiry = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    seeded = requests.post(
        f"{url}/_sim/bulk",
        json={
            "users": count,
            "userPrefix": "bench",
            "subscription": {
                "notificationUrl": "https://connector.example.test/api/notifications",
                "lifecycleNotificationUrl": "https://connector.example.test/api/lifecycle",
                "expirationDateTime": expiry.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "resource": MAILBOX_RESOURCE,
                "changeType": MAILBOX_CHANGE_TYPES,
                "clientState": "bench",
            },
            "skipValidation": True,
        },
        verify=ca,
        timeout=600,
    )
    seeded.raise_for_status()
    mailboxes = [
        {"user": m["userId"], "tenant": m["tenantId"], "subscription": m["subscriptionId"], "token": m["accessToken"]}
        for m in seeded.json()["value"]
    ]
    return child, {"url": url, "ca": ca, "seeded": mailboxes}


# --- the connector's side -----------------------------------------------------------------


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children so far (``/proc/<pid>/stat``; 0 where
    there is no /proc): the emulators' share of the machine during the run."""
    total = 0.0
    try:
        pids = [pid, *(int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]
        for one in pids:
            fields = Path(f"/proc/{one}/stat").read_text().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        pass
    return total


def settings_for(storage: str, graph_url: str, concurrency: int) -> Any:
    from shared.config import Settings

    return Settings.from_env(
        {
            "AzureWebJobsStorage": storage,
            "MICROSOFT_CLIENT_ID": "00000000-0000-4000-8000-00000000c0de",
            "MICROSOFT_CLIENT_SECRET": "bench",
            "MICROSOFT_AUTHORITY_HOST": graph_url,
            "GRAPH_API_ENDPOINT": f"{graph_url}/v1.0",
            "KEY_VAULT_URL": "https://127.0.0.1:1",
            "PUBLIC_BASE_URL": "https://connector.example.test",
            "CLIENT_STATE_KEY": "bench-client-state-key-0123456789abcdef",
            "RENEWAL_WINDOW_MINUTES": "1440",
            "RENEWAL_CONCURRENCY": str(concurrency),
            "RENEWAL_TIME_BUDGET_SECONDS": "420",
        }
    )


def seed_tables(services: Any, mailboxes: list[dict[str, str]]) -> None:
    """Accounts and their subscriptions, due within the next 20 hours (several index buckets),
    each recorded as the connector makes it (current key, a nonce, immutable ids): renewed by
    a PATCH, not re-issued."""
    from shared.client_state import key_id, new_nonce
    from shared.models import Account, Subscription
    from shared.subscriptions import MAILBOX_CHANGE_TYPES, MAILBOX_RESOURCE

    now = dt.datetime.now(dt.UTC)
    rng = random.Random(7)

    def seed(m: dict[str, str]) -> None:
        account_id = f"{m['user']}.{m['tenant']}"
        services.accounts.save(
            Account(
                account_id=account_id,
                tenant_id=m["tenant"],
                user_id=m["user"],
                user_principal_name=f"{m['user']}@contoso.test",
                connected_at=now - dt.timedelta(days=7),
                last_notification_at=now - dt.timedelta(minutes=20),
                last_sync_at=now - dt.timedelta(minutes=20),
            )
        )
        services.subscriptions.save(
            Subscription(
                subscription_id=m["subscription"],
                account_id=account_id,
                resource=MAILBOX_RESOURCE,
                change_type=MAILBOX_CHANGE_TYPES,
                expires_at=now + dt.timedelta(minutes=rng.randint(60, 20 * 60)),
                last_renewed_at=now - dt.timedelta(days=6),
                client_state_nonce=new_nonce(),
                client_state_key_id=key_id(services.settings.client_state_key),
                immutable_ids=True,
            )
        )
        services.tokens.remember(account_id, m["token"], 3600)

    with ThreadPoolExecutor(max_workers=32) as pool:
        list(pool.map(seed, mailboxes))


def renewal_run(services: Any, concurrency: int) -> tuple[Any, float]:
    from shared.renewal import RenewalPolicy, renew_subscriptions

    policy = RenewalPolicy.from_services(services)
    policy = RenewalPolicy(policy.window, policy.catchup_after, concurrency, policy.time_budget_seconds, 0)
    started = time.perf_counter()
    report = renew_subscriptions(services, policy=policy)
    return report, time.perf_counter() - started


def check_renewed(report: Any, expected: int) -> None:
    if report.renewed != expected or report.failed:
        raise SystemExit(f"expected {expected} renewals without failure, got: {report.summary()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscriptions", type=int, default=10_000)
    parser.add_argument("--sample", type=int, default=300)
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=0, help="default: RENEWAL_CONCURRENCY's default")
    args = parser.parse_args()

    import logging

    import requests

    from shared.adapters.tables import TableSubscriptionStore
    from shared.bootstrap import Services
    from shared.config import SETTING_DEFAULTS
    from tests.support.azurite import Azurite

    logging.basicConfig(level=logging.WARNING)
    concurrency = args.concurrency or int(SETTING_DEFAULTS["RENEWAL_CONCURRENCY"] or 32)
    total, sample = args.subscriptions, args.sample
    with tempfile.TemporaryDirectory(prefix="bench-renewal-") as tmp:
        workdir = Path(tmp)
        print(f"seeding the simulator with {total + sample} mailboxes and subscriptions ...", flush=True)
        child, sim = start_simulator(total + sample, workdir)
        try:
            os.environ["REQUESTS_CA_BUNDLE"] = sim["ca"]
            control = requests.put(
                f"{sim['url']}/_sim/settings",
                json={"graphLatencyMs": args.latency_ms},
                verify=sim["ca"],
                timeout=10,
            )
            control.raise_for_status()
            with Azurite.start(workdir / "azurite") as azurite:
                settings = settings_for(azurite.connection_string, sim["url"], concurrency)
                mailboxes = sim["seeded"]

                # 1. strictly sequential, on a sample: one thread, one index read at a time
                sequential = Services(
                    settings,
                    subscriptions=TableSubscriptionStore(azurite.connection_string, read_parallelism=1),
                )
                seed_tables(sequential, mailboxes[:sample])
                report, seq_seconds = renewal_run(sequential, 1)
                check_renewed(report, sample)

                # 2. the full set, as the timer runs it
                services = Services(settings)
                print(f"seeding the tables with {total} accounts and subscriptions ...", flush=True)
                seed_tables(services, mailboxes[sample:])
                emulators = {"Azurite": azurite.process.pid, "Graph simulator": child.pid}
                emulators_before = {name: process_cpu_seconds(pid) for name, pid in emulators.items()}
                before = resource.getrusage(resource.RUSAGE_SELF)
                report, seconds = renewal_run(services, concurrency)
                check_renewed(report, total)
                after = resource.getrusage(resource.RUSAGE_SELF)
                emulator_cpu = {
                    name: process_cpu_seconds(pid) - emulators_before[name] for name, pid in emulators.items()
                }
                rss_before, peak_mb = before.ru_maxrss / 1024, after.ru_maxrss / 1024
                cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

                probe = mailboxes[-1]
                in_graph = requests.get(
                    f"{sim['url']}/_sim/subscriptions/{probe['subscription']}", verify=sim["ca"], timeout=10
                ).json()
        finally:
            child.terminate()
            child.wait(timeout=30)

    per_item = seq_seconds / sample
    extrapolated = per_item * total
    speedup = extrapolated / seconds
    print()
    print(
        f"renewal of {total} subscriptions of {total} mailboxes, Graph latency {args.latency_ms} ms per call"
    )
    print(f"  concurrent run ({concurrency} threads):  {seconds:7.1f} s  ({total / seconds:,.0f} renewals/s)")
    print(f"    {report.summary()}")
    print(
        f"    CPU of this process: {cpu:.1f} s ({cpu / total * 1000:.1f} ms per renewal; the run is bound by "
        f"one interpreter's CPU when this is close to the wall time)"
    )
    for name, used in emulator_cpu.items():
        print(f"    CPU of the {name}: {used:.1f} s ({used / total * 1000:.1f} ms per renewal)")
    print(f"    e.g. {probe['subscription']} now expires {in_graph.get('expirationDateTime')}")
    print(
        f"  sequential run, measured on a sample of {sample}: {seq_seconds:.1f} s "
        f"({per_item * 1000:.0f} ms per subscription)"
    )
    print(f"  sequential run, extrapolated to {total}: {extrapolated:7.1f} s")
    print(f"  speed-up: {speedup:.1f}x")
    print(f"  peak memory of this process: {peak_mb:.0f} MB (before the run: {rss_before:.0f} MB)")
    print()
    checks = [
        (f"run time < {TARGET_SECONDS:.0f} s", seconds < TARGET_SECONDS),
        (f"speed-up >= {TARGET_SPEEDUP:.0f}x", speedup >= TARGET_SPEEDUP),
        (f"peak memory < {TARGET_PEAK_MB:.0f} MB", peak_mb < TARGET_PEAK_MB),
    ]
    for label, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {label}")


if __name__ == "__main__":
    main()
