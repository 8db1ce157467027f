"""Run the Key Vault emulator alone: ``python -m devstack.keyvault``.

Environment: ``KEYVAULT_HOST`` (127.0.0.1), ``KEYVAULT_PORT`` (8443), ``KEYVAULT_DATA_FILE``
(``.devstack/keyvault.json``; empty: in memory), ``KEYVAULT_TENANT_ID``,
``DEVSTACK_CERT_DIR`` (``.devstack/certs``). Stops cleanly on SIGINT and SIGTERM.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from types import FrameType

from devstack.certs import DEFAULT_CERT_DIR, PROJECT_ROOT
from devstack.keyvault.server import DEFAULT_TENANT_ID, KeyVaultEmulator


def main() -> int:
    logging.basicConfig(level=os.environ.get("KEYVAULT_LOG_LEVEL", "INFO"), format="%(asctime)s %(name)s %(message)s")
    data_file = os.environ.get("KEYVAULT_DATA_FILE", str(PROJECT_ROOT / ".devstack" / "keyvault.json"))
    emulator = KeyVaultEmulator(
        host=os.environ.get("KEYVAULT_HOST", "127.0.0.1"),
        port=int(os.environ.get("KEYVAULT_PORT", "8443")),
        data_file=Path(data_file) if data_file else None,
        cert_dir=DEFAULT_CERT_DIR,
        tenant_id=os.environ.get("KEYVAULT_TENANT_ID", DEFAULT_TENANT_ID),
    )
    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    emulator.start()
    print(f"Key Vault emulator: {emulator.url}", flush=True)
    print(f"CA certificate:     {emulator.ca_file}", flush=True)
    print(f"Secrets kept in:    {data_file or '(memory)'}", flush=True)
    while not stopping.wait(0.5):
        pass
    emulator.stop()
    print("Key Vault emulator stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
