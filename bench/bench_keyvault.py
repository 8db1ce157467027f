"""Key Vault round trips as the connector makes them: ``KeyVaultSecretStore`` against the
devstack emulator (HTTPS, challenge authentication, keep-alive), on a free port.

Prints the latency of get and set for a token-cache-sized value (8 KB), and the cost of
a reconnect (set on a soft-deleted name: recover, then write). The emulator is local, so
these are the client's own costs (SDK pipeline, TLS, JSON), not Azure's.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devstack.keyvault import KeyVaultEmulator  # noqa: E402
from shared.adapters.keyvault import KeyVaultSecretStore  # noqa: E402

ROUNDS = 200
VALUE = "x" * 8 * 1024


def _ms(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    return f"p50 {statistics.median(ordered) * 1000:6.2f} ms  p95 {p95 * 1000:6.2f} ms"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, KeyVaultEmulator(cert_dir=Path(tmp) / "certs") as emulator:
        store = KeyVaultSecretStore(emulator.url, ca_bundle=str(emulator.ca_file))
        started = time.perf_counter()
        store.set("bench-account", VALUE)  # first call: challenge, token, TLS handshake
        first = time.perf_counter() - started

        sets, gets, reconnects = [], [], []
        for _ in range(ROUNDS):
            t0 = time.perf_counter()
            store.set("bench-account", VALUE)
            t1 = time.perf_counter()
            store.get("bench-account")
            t2 = time.perf_counter()
            sets.append(t1 - t0)
            gets.append(t2 - t1)
        for _ in range(20):
            store.delete("bench-account")
            t0 = time.perf_counter()
            store.set("bench-account", VALUE)
            reconnects.append(time.perf_counter() - t0)
        store.close()

    print(f"first call (challenge + TLS): {first * 1000:.1f} ms")
    print(f"set 8 KB  x{ROUNDS}: {_ms(sets)}")
    print(f"get 8 KB  x{ROUNDS}: {_ms(gets)}")
    print(f"set after delete (recover + set) x{len(reconnects)}: {_ms(reconnects)}")


if __name__ == "__main__":
    main()
