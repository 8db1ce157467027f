"""The local stack as `make run` starts it: every part up, health green, listeners gone after stop.

The supervisor (``python -m devstack``) is started as `make run` starts it, in a process
group of its own, on free ports and a data directory of the test's, and stopped the ways
people and platforms stop it: the group's SIGTERM through GNU make (which forwards it, so
the supervisor gets it twice), Ctrl-C pressed twice, a signal while it is still starting.
Afterwards no listener may remain on the stack's ports and no process it started may live.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import requests

from devstack.certs import PROJECT_ROOT
from devstack.stack import DEFAULT_FUNCTION_KEY, DEFAULT_PORTS, LocalStack, free_port
from tests.support.stack import function_key_headers, wait_for


def test_health_is_green_on_the_running_stack(stack: LocalStack) -> None:
    response = requests.get(f"{stack.devhost_url}/api/health", timeout=10)
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok"}
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    details = requests.get(f"{stack.devhost_url}/api/health/details", headers=function_key_headers(stack), timeout=10)
    assert details.json()["dependencies"] == {"tables": "ok", "queues": "ok", "keyvault": "ok"}


def test_admin_routes_need_the_function_key(stack: LocalStack) -> None:
    assert requests.get(f"{stack.devhost_url}/api/accounts", timeout=10).status_code == 401
    assert requests.get(f"{stack.devhost_url}/api/health/details", timeout=10).status_code == 401
    ok = requests.get(f"{stack.devhost_url}/api/accounts", headers={"x-functions-key": stack.function_key}, timeout=10)
    assert ok.status_code == 200


def test_a_stopped_stack_leaves_no_listener_and_health_reports_a_dead_vault(tmp_path: Path) -> None:
    with LocalStack.on_free_ports(tmp_path) as own:
        vault = next(c for c in own.children if c.name == "keyvault")
        vault.process.terminate()
        vault.process.wait(timeout=10)
        # The report is cached for a few seconds: the dead vault shows after that.
        def degraded() -> dict[str, object] | None:
            response = requests.get(f"{own.devhost_url}/api/health", timeout=30)
            return dict(response.json()) if response.status_code == 503 else None

        assert wait_for(degraded, timeout=20, interval=0.5, what="health to turn degraded") == {"status": "degraded"}
        details = requests.get(f"{own.devhost_url}/api/health/details", headers=function_key_headers(own), timeout=30)
        assert details.json()["dependencies"]["keyvault"].startswith("error")
        ports = list(own.ports.values())
    for port in ports:
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still listening"


# --- the supervisor under signals --------------------------------------------------------------


class Supervisor:
    """``python -m devstack`` in a process group of its own, as a terminal or make starts it."""

    def __init__(self, tmp_path: Path, *, via_make: bool, env: dict[str, str] | None = None) -> None:
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.ports = {name: free_port() for name in DEFAULT_PORTS}
        self.data_dir = tmp_path / "data"
        self.log_path = tmp_path / "supervisor.log"
        argv = [sys.executable, "-m", "devstack"]
        if via_make:
            makefile = tmp_path / "Makefile"
            makefile.write_text(f"run:\n\t{sys.executable} -m devstack\n")
            argv = ["make", "--no-print-directory", "-f", str(makefile), "run"]
        self.env = {**os.environ, **{k: str(v) for k, v in self.ports.items()},
                    "DEVSTACK_DATA_DIR": str(self.data_dir), **(env or {})}
        for inherited in ("DEVSTACK_CERT_DIR", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"):
            self.env.pop(inherited, None)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(argv, cwd=PROJECT_ROOT, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def devhost_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['DEVHOST_PORT']}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_until_up(self) -> bool:
        """Whether the stack came up on its ports. False when another process on this shared
        machine took one of the free ports in between (it answered in our devhost's place)."""
        wait_for(lambda: "Local stack is up" in self.log() or self.process.poll() is not None,
                 timeout=120, interval=0.2, what="the stack to start")
        assert self.process.poll() is None, self.log()[-3000:]
        try:
            answer = requests.get(f"{self.devhost_url}/api/health", timeout=10).json()
        except ValueError:
            answer = None
        return answer == {"status": "ok"} and any(b"devstack.devhost" in _cmdline(pid) for pid in self.own_processes())

    def signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:
            pass  # the group is gone already: nothing left to stop

    def signal_storm(self, seconds: float = 3.0, interval: float = 0.02) -> None:
        """SIGTERM, SIGINT and SIGHUP in turn until the supervisor exits: some land during its stop."""
        deadline = time.monotonic() + seconds
        kinds = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        for n in range(10_000):
            if self.process.poll() is not None or time.monotonic() > deadline:
                return
            self.signal_group(kinds[n % len(kinds)])
            time.sleep(interval)

    def listening(self) -> list[int]:
        out = []
        for port in self.ports.values():
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    out.append(port)
        return out

    def own_processes(self) -> list[int]:
        """Every live process started with this supervisor's environment (its children too)."""
        marker = f"DEVSTACK_DATA_DIR={self.data_dir}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0") and b"Z" not in _state(entry):
                    found.append(int(entry.name))
            except OSError:
                continue
        return found

    def kill_leftovers(self) -> None:
        for pid in self.own_processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _state(proc: Path) -> bytes:
    return (proc / "stat").read_bytes().rsplit(b")", 1)[-1].split()[0]


@pytest.fixture
def supervisors() -> Iterator[list[Supervisor]]:
    started: list[Supervisor] = []
    yield started
    for supervisor in started:  # a failed test must not leave its stack behind
        supervisor.kill_leftovers()


def running_supervisor(tmp_path: Path, started: list[Supervisor], **kwargs: Any) -> Supervisor:
    """A supervisor whose stack is up on its own ports (tried again on fresh ports when another
    process took one of them between choosing and binding it)."""
    for attempt in range(3):
        supervisor = Supervisor(tmp_path / f"try{attempt}", **kwargs)
        started.append(supervisor)
        if supervisor.wait_until_up():
            return supervisor
        supervisor.signal_group(signal.SIGTERM)
        supervisor.process.wait(timeout=60)
        supervisor.kill_leftovers()
    raise AssertionError("the stack did not come up on free ports three times")


def assert_stopped_completely(supervisor: Supervisor) -> None:
    try:
        code = supervisor.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        raise AssertionError("the supervisor did not exit:\n" + supervisor.log()[-3000:]) from None
    assert supervisor.listening() == [], (code, supervisor.log()[-3000:])
    assert supervisor.own_processes() == [], supervisor.log()[-3000:]


def test_the_group_sigterm_through_make_stops_every_child(tmp_path: Path, supervisors: list[Supervisor]) -> None:
    supervisor = running_supervisor(tmp_path, supervisors, via_make=True)
    assert len(supervisor.listening()) == len(DEFAULT_PORTS)
    supervisor.signal_group(signal.SIGTERM)  # make forwards it: the supervisor gets it twice
    assert_stopped_completely(supervisor)


def test_ctrl_c_pressed_twice_stops_every_child(tmp_path: Path, supervisors: list[Supervisor]) -> None:
    supervisor = running_supervisor(tmp_path, supervisors, via_make=False)
    supervisor.signal_group(signal.SIGINT)
    time.sleep(0.3)
    supervisor.signal_group(signal.SIGINT)
    assert_stopped_completely(supervisor)
    assert supervisor.process.returncode == 0


def test_signals_while_the_stack_is_starting_stop_what_had_started(
    tmp_path: Path, supervisors: list[Supervisor]
) -> None:
    supervisor = Supervisor(tmp_path, via_make=False)
    supervisors.append(supervisor)
    graphsim = supervisor.ports["GRAPHSIM_PORT"]
    wait_for(lambda: graphsim in supervisor.listening() or supervisor.process.poll() is not None,
             timeout=60, interval=0.05, what="the simulator to listen")
    assert "Local stack is up" not in supervisor.log()
    supervisor.signal_group(signal.SIGTERM)
    time.sleep(0.3)
    supervisor.signal_group(signal.SIGINT)
    assert_stopped_completely(supervisor)
    assert "Local stack is up" not in supervisor.log()


@pytest.mark.parametrize("moment", ["while starting", "while running"])
def test_a_storm_of_signals_at_any_moment_stops_every_child(
    tmp_path: Path, supervisors: list[Supervisor], moment: str
) -> None:
    if moment == "while running":
        supervisor = running_supervisor(tmp_path, supervisors, via_make=False)
    else:
        supervisor = Supervisor(tmp_path, via_make=False)
        supervisors.append(supervisor)
        keyvault = supervisor.ports["KEYVAULT_PORT"]
        wait_for(lambda: keyvault in supervisor.listening() or supervisor.process.poll() is not None,
                 timeout=60, interval=0.05, what="the Key Vault emulator to listen")
    supervisor.signal_storm()
    assert_stopped_completely(supervisor)


def test_settings_in_the_environment_win_over_local_settings_but_not_over_the_stacks_addresses(
    tmp_path: Path, supervisors: list[Supervisor]
) -> None:
    supervisor = running_supervisor(tmp_path, supervisors, via_make=False, env={
        "MAIL_ACTIONS_ENABLED": "true",                     # a product setting: the environment wins
        "KEY_VAULT_URL": "https://127.0.0.1:1",             # the stack's address: the stack wins
        "REQUESTS_CA_BUNDLE": str(tmp_path / "no-such-ca.pem"),
    })
    connect = requests.get(f"{supervisor.devhost_url}/api/connect", params={"login_hint": "x@contoso.test"},
                           allow_redirects=False, timeout=30)
    assert connect.status_code == 302, connect.text
    scopes = parse_qs(urlparse(connect.headers["Location"]).query)["scope"][0].split()
    assert "Mail.ReadWrite" in scopes and "Mail.Read" not in scopes
    key = {"x-functions-key": supervisor.env.get("DEVHOST_FUNCTION_KEY", DEFAULT_FUNCTION_KEY)}
    details = requests.get(f"{supervisor.devhost_url}/api/health/details", headers=key, timeout=30)
    assert details.json()["dependencies"] == {"tables": "ok", "queues": "ok", "keyvault": "ok"}
    supervisor.signal_group(signal.SIGTERM)
    assert_stopped_completely(supervisor)


def test_the_environment_overrides_local_settings_and_the_stacks_addresses_override_both() -> None:
    from devstack.stack import app_settings

    merged = app_settings(
        {"RENEWAL_SCHEDULE": "0 */15 * * * *", "KEY_VAULT_URL": "https://127.0.0.1:8443", "GRAPH_SCOPES": "User.Read"},
        {"RENEWAL_SCHEDULE": "0 */5 * * * *", "KEY_VAULT_URL": "https://elsewhere", "PATH": "/usr/bin"},
        {"KEY_VAULT_URL": "https://127.0.0.1:50123"},
    )
    assert merged == {"RENEWAL_SCHEDULE": "0 */5 * * * *", "KEY_VAULT_URL": "https://127.0.0.1:50123",
                      "GRAPH_SCOPES": "User.Read"}
