"""A real Azurite (blob, queue and table) on free ports in a directory of its own.

    with Azurite.start(tmp_path) as azurite:
        QueueClient.from_connection_string(azurite.connection_string, "q")

The emulator is the npm package pinned in package.json (``node_modules/.bin/azurite``;
``AZURITE_BIN`` overrides the path). It keeps its data in memory (Azurite refuses
``--location`` together with ``--inMemoryPersistence``, so the directory is only its working
directory) and writes its output to ``<location>/azurite.log``, worth reading when a test
against it fails.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tests.support import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
# Azurite's well-known development account (documented, not a secret).
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
START_TIMEOUT_SECONDS = 30.0


class AzuriteNotAvailable(RuntimeError):
    """Azurite is not installed or did not come up."""


def azurite_binary() -> Path:
    path = Path(os.environ.get("AZURITE_BIN", PROJECT_ROOT / "node_modules" / ".bin" / "azurite"))
    if not path.exists():
        raise AzuriteNotAvailable(f"Azurite not found at {path}; run `npm ci`")
    return path


def _listening(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class Azurite:
    """A running Azurite process and how to reach it."""

    process: subprocess.Popen[bytes]
    location: Path
    blob_port: int
    queue_port: int
    table_port: int

    @property
    def connection_string(self) -> str:
        base = f"http://{HOST}"
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={base}:{self.blob_port}/{ACCOUNT_NAME};"
            f"QueueEndpoint={base}:{self.queue_port}/{ACCOUNT_NAME};"
            f"TableEndpoint={base}:{self.table_port}/{ACCOUNT_NAME};"
        )

    @classmethod
    def start(cls, location: Path, attempts: int = 3) -> Azurite:
        """Starts Azurite on three free ports and waits until all of them accept connections."""
        location.mkdir(parents=True, exist_ok=True)
        binary = azurite_binary()
        last_error = ""
        for _ in range(attempts):  # a free port can be taken between the probe and the bind
            ports = (free_port(), free_port(), free_port())
            if len(set(ports)) < 3:
                continue
            log = open(location / "azurite.log", "ab")  # noqa: SIM115 - lives as long as the process
            process = subprocess.Popen(
                [str(binary), "--silent", "--inMemoryPersistence", "--skipApiVersionCheck", "--loose", "--disableTelemetry",
                 "--blobHost", HOST, "--queueHost", HOST, "--tableHost", HOST,
                 "--blobPort", str(ports[0]), "--queuePort", str(ports[1]), "--tablePort", str(ports[2])],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=location,
            )
            log.close()
            azurite = cls(process, location, *ports)
            deadline = time.monotonic() + START_TIMEOUT_SECONDS
            while time.monotonic() < deadline and process.poll() is None:
                if all(_listening(port) for port in ports):
                    return azurite
                time.sleep(0.05)
            last_error = f"exit code {process.poll()}"
            azurite.stop()
        raise AzuriteNotAvailable(f"Azurite did not start ({last_error}); see {location / 'azurite.log'}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def __enter__(self) -> Azurite:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()
