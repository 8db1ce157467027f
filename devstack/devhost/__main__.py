"""``python -m devstack.devhost``: serve the function app until SIGINT or SIGTERM.

Environment: DEVHOST_APP (module, default ``function_app``), DEVHOST_HOST (127.0.0.1),
DEVHOST_PORT (7071), DEVHOST_FUNCTION_KEY, DEVHOST_MASTER_KEY (default: the function key),
DEVHOST_HOST_JSON (default ``host.json`` of the app directory). Options override them.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from types import FrameType

from .host import DEFAULT_PORT, DevHost, DevHostError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.devhost", description=__doc__.splitlines()[0])
    parser.add_argument("--app", default=os.environ.get("DEVHOST_APP", "function_app"),
                        help="module[:attribute] of the FunctionApp (default: function_app)")
    parser.add_argument("--app-dir", default=".", help="directory of the app, host.json and local.settings.json")
    parser.add_argument("--host", default=os.environ.get("DEVHOST_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("DEVHOST_PORT", DEFAULT_PORT)))
    parser.add_argument("--host-json", default=os.environ.get("DEVHOST_HOST_JSON"))
    parser.add_argument("--log-level", default=os.environ.get("DEVHOST_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The storage SDK logs every request at INFO: one line per queue poll, several per second.
    logging.getLogger("azure").setLevel(max(logging.WARNING, logging.getLogger().level))

    host = DevHost(app_module=args.app, host=args.host, port=args.port, host_json=args.host_json,
                   app_dir=os.path.abspath(args.app_dir))

    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        host.start()
    except (DevHostError, ImportError, ValueError) as error:
        print(f"devhost: {error}", file=sys.stderr)
        return 1
    print(f"devhost listening on {host.base_url}", flush=True)
    print(f"function key (code= or x-functions-key): {host.function_key}", flush=True)
    for function in host.describe():
        if "route" in function:
            methods = ",".join(function["methods"] or ["*"])
            print(f"  {function['name']}: [{methods}] {host.base_url}{function['route']} ({function['authLevel']})")
        else:
            detail = function.get("schedule") or function.get("queueName") or ""
            print(f"  {function['name']}: {function['trigger']} {detail}")
    for name, problem in host.errors.items():
        print(f"  {name}: ERROR {problem}")
    sys.stdout.flush()
    try:
        while not stopping.wait(0.5):
            pass
    finally:
        host.stop()
        print("devhost stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
