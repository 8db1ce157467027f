"""``python -m devstack`` (what ``make run`` runs): the whole local platform, in the foreground.

Ports come from AZURITE_BLOB_PORT, AZURITE_QUEUE_PORT, AZURITE_TABLE_PORT, KEYVAULT_PORT,
GRAPHSIM_PORT and DEVHOST_PORT; data stays in ``.devstack/``. Ctrl-C or SIGTERM stops
every child.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from types import FrameType

from devstack.certs import PROJECT_ROOT
from devstack.stack import DEFAULT_FUNCTION_KEY, DEFAULT_PORTS, LocalStack


def _default_users(stack: LocalStack) -> list[str]:
    try:
        users = stack.sim("GET", "/_sim/users")
    except Exception:  # noqa: BLE001 - the listing is a courtesy; the stack runs without it
        return []
    values = users.get("value", users) if isinstance(users, dict) else users
    return [str(u.get("userPrincipalName")) for u in values if isinstance(u, dict)]


def main() -> int:
    ports = {name: int(os.environ.get(name, default)) for name, default in DEFAULT_PORTS.items()}
    stack = LocalStack(
        data_dir=PROJECT_ROOT / ".devstack",
        ports=ports,
        function_key=os.environ.get("DEVHOST_FUNCTION_KEY", DEFAULT_FUNCTION_KEY),
    )

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        stack.start(timeout=90)
        users = ", ".join(_default_users(stack)) or "see GET /_sim/users"
        print(
            "\nLocal stack is up:\n"
            f"  app (devhost)       {stack.devhost_url}/api  (health: {stack.devhost_url}/api/health)\n"
            f"  connect a mailbox   {stack.devhost_url}/api/connect/start\n"
            f"  function key        {stack.function_key}  (x-functions-key header or ?code=)\n"
            f"  Azurite             {stack.storage_connection.split(';BlobEndpoint')[0].split(';AccountKey')[0]}"
            f" on ports {ports['AZURITE_BLOB_PORT']}-{ports['AZURITE_TABLE_PORT']}\n"
            f"  Key Vault emulator  {stack.keyvault_url}\n"
            f"  Graph + identity    {stack.graphsim_url}  (control API: {stack.graphsim_url}/_sim)\n"
            f"  simulator users     {users}\n"
            f"  local CA            {stack.ca_file}\n"
            "Ctrl-C stops everything.",
            flush=True,
        )
        while all(child.process.poll() is None for child in stack.children):
            time.sleep(0.5)
        dead = [c.name for c in stack.children if c.process.poll() is not None]
        print(f"stopping: {', '.join(dead)} exited", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
