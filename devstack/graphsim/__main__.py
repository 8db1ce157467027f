"""``python -m devstack.graphsim``: run the simulator alone (GRAPHSIM_HOST, GRAPHSIM_PORT)."""

from __future__ import annotations

import logging
import os
import signal
import threading

from .server import GraphSimulator
from .state import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_REDIRECT_URI, DEFAULT_TENANT_ID


def main() -> None:
    logging.basicConfig(level=os.environ.get("GRAPHSIM_LOG_LEVEL", "INFO"))
    host = os.environ.get("GRAPHSIM_HOST", "127.0.0.1")
    port = int(os.environ.get("GRAPHSIM_PORT", "8444"))
    sim = GraphSimulator(host=host, port=port).start()
    print(f"graphsim listening on {sim.base_url} (Graph {sim.graph_url}, control {sim.control_url})", flush=True)
    print(f"trust CA: {sim.ca_file}", flush=True)
    print(f"tenant: {DEFAULT_TENANT_ID}", flush=True)
    print(f"default app: client_id={DEFAULT_CLIENT_ID} secret={DEFAULT_CLIENT_SECRET} "
          f"redirect_uri={DEFAULT_REDIRECT_URI}", flush=True)
    for user in sim.state.users.values():
        print(f"user: {user.user_principal_name} ({user.display_name}) id={user.id}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    sim.stop()


if __name__ == "__main__":
    main()
