"""The local stack as `make run` starts it: every part up, health green, listeners gone after stop."""

from __future__ import annotations

import socket
from pathlib import Path

import requests

from devstack.stack import LocalStack


def test_health_is_green_on_the_running_stack(stack: LocalStack) -> None:
    response = requests.get(f"{stack.devhost_url}/api/health", timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["dependencies"] == {"tables": "ok", "queues": "ok", "keyvault": "ok"}


def test_admin_routes_need_the_function_key(stack: LocalStack) -> None:
    assert requests.get(f"{stack.devhost_url}/api/accounts", timeout=10).status_code == 401
    ok = requests.get(f"{stack.devhost_url}/api/accounts", headers={"x-functions-key": stack.function_key}, timeout=10)
    assert ok.status_code == 200


def test_a_stopped_stack_leaves_no_listener_and_health_reports_a_dead_vault(tmp_path: Path) -> None:
    with LocalStack.on_free_ports(tmp_path) as own:
        vault = next(c for c in own.children if c.name == "keyvault")
        vault.process.terminate()
        vault.process.wait(timeout=10)
        response = requests.get(f"{own.devhost_url}/api/health", timeout=30)
        assert response.status_code == 503
        assert response.json()["dependencies"]["keyvault"].startswith("error")
        ports = list(own.ports.values())
    for port in ports:
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still listening"
