"""``python -m devstack`` (what ``make run`` runs): the whole local platform, in the foreground.

Ports come from AZURITE_BLOB_PORT, AZURITE_QUEUE_PORT, AZURITE_TABLE_PORT, KEYVAULT_PORT,
GRAPHSIM_PORT and DEVHOST_PORT; data stays in ``.devstack/`` (``DEVSTACK_DATA_DIR``).

Ctrl-C, SIGTERM or SIGHUP stops every child, however many arrive and whenever they do:
during start, while running, or while stopping. A process group's SIGTERM reaches this
process twice under ``make run`` (once directly, once forwarded by make), and Ctrl-C is
often pressed twice. The handlers therefore raise nothing: they set a flag that start and
the supervisor loop look at, and the stop that follows runs to its end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from devstack.certs import PROJECT_ROOT
from devstack.stack import DEFAULT_FUNCTION_KEY, DEFAULT_PORTS, LocalStack, StackStopped

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _default_users(stack: LocalStack) -> list[str]:
    try:
        users = stack.sim("GET", "/_sim/users")
    except Exception:  # noqa: BLE001 - the listing is a courtesy; the stack runs without it
        return []
    values = users.get("value", users) if isinstance(users, dict) else users
    return [str(u.get("userPrincipalName")) for u in values if isinstance(u, dict)]


def main() -> int:
    ports = {name: int(os.environ.get(name, default)) for name, default in DEFAULT_PORTS.items()}
    data_dir = Path(os.environ.get("DEVSTACK_DATA_DIR") or PROJECT_ROOT / ".devstack")
    stack = LocalStack(
        data_dir=data_dir,
        ports=ports,
        cert_dir=Path(os.environ.get("DEVSTACK_CERT_DIR") or data_dir / "certs"),
        function_key=os.environ.get("DEVHOST_FUNCTION_KEY", DEFAULT_FUNCTION_KEY),
    )

    def stop(signum: int, frame: FrameType | None) -> None:
        stack.request_stop()  # only a flag: see the module docstring

    for signum in STOP_SIGNALS:
        signal.signal(signum, stop)
    try:
        stack.start(timeout=90)
        users = ", ".join(_default_users(stack)) or "see GET /_sim/users"
        if stack.stop_requested:
            return 0
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
        while not stack.stop_requested and all(child.process.poll() is None for child in stack.children):
            time.sleep(0.2)
        if stack.stop_requested:
            return 0
        dead = [c.name for c in stack.children if c.process.poll() is not None]
        print(f"stopping: {', '.join(dead)} exited", file=sys.stderr)
        return 1
    except StackStopped:
        return 0
    finally:
        if stack.children:
            # The terminal may be gone (SIGHUP): a failed print must not cut the stop short.
            with contextlib.suppress(OSError):
                print("stopping the local stack...", file=sys.stderr, flush=True)
        stack.stop()
        # Everything is stopped: a late signal (the second Ctrl-C, make's forwarded SIGTERM)
        # must not meet the interpreter's shutdown, which puts the default handlers back
        # and would end the process by that signal instead of with our exit code.
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(main())
