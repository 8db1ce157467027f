"""The whole local platform in one object: Azurite, Key Vault emulator, Graph simulator, devhost.

``make run`` starts it on the documented ports (``python -m devstack``); the end-to-end
tests start it on free ports of their own. Each part runs as its own process, exactly as
an operator would start it by hand, and the app sees only settings, as in Azure:

    Azurite            http://127.0.0.1:10000-10002   (AZURITE_BLOB_PORT, _QUEUE_PORT, _TABLE_PORT)
    Key Vault emulator https://127.0.0.1:8443         (KEYVAULT_PORT)
    Graph simulator    https://127.0.0.1:8444         (GRAPHSIM_PORT)
    devhost            http://127.0.0.1:7071          (DEVHOST_PORT)

Stopping terminates every child's process group, so no listener outlives the stack.
``request_stop()`` may be called at any moment, from a signal handler too (it only sets a
flag): a ``start()`` under way then stops what it started and raises ``StackStopped``.

The app's settings are those of ``local.settings.json``, overridden, as the Functions host
does, by variables already in the environment (``MAIL_ACTIONS_ENABLED=true make run``),
and then by the stack's own addresses (storage, Key Vault, simulator, devhost, CA), which
no environment can point elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from devstack.certs import PROJECT_ROOT, ensure_ca
from devstack.devhost import DEFAULT_FUNCTION_KEY

AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public, documented by Microsoft; not a secret).
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

DEFAULT_PORTS = {
    "AZURITE_BLOB_PORT": 10000,
    "AZURITE_QUEUE_PORT": 10001,
    "AZURITE_TABLE_PORT": 10002,
    "KEYVAULT_PORT": 8443,
    "GRAPHSIM_PORT": 8444,
    "DEVHOST_PORT": 7071,
}
DEFAULT_REDIRECT_URI = "http://127.0.0.1:7071/api/auth/callback"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def azurite_connection_string(blob: int, queue: int, table: int, host: str = "127.0.0.1") -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint=http://{host}:{blob}/{AZURITE_ACCOUNT};"
        f"QueueEndpoint=http://{host}:{queue}/{AZURITE_ACCOUNT};"
        f"TableEndpoint=http://{host}:{table}/{AZURITE_ACCOUNT};"
    )


class StackStopped(RuntimeError):
    """``request_stop()`` was called while the stack was starting; what had started is stopped."""


def app_settings(
    local: Mapping[str, str], environ: Mapping[str, str], addresses: Mapping[str, str]
) -> dict[str, str]:
    """The app's settings: ``local``, then the same names from ``environ``, then ``addresses``."""
    values = dict(local)
    values.update({name: environ[name] for name in local if name in environ})
    values.update(addresses)
    return values


def load_local_settings(path: Path = PROJECT_ROOT / "local.settings.json") -> dict[str, str]:
    if not path.exists():
        path = PROJECT_ROOT / "local.settings.json.example"
    values = json.loads(path.read_text()).get("Values", {})
    return {str(k): str(v) for k, v in values.items()}


@dataclass
class _Child:
    name: str
    process: subprocess.Popen[bytes]
    log: IO[bytes] | None


@dataclass
class LocalStack:
    """Start with ``start()`` (or ``with LocalStack(...) as stack``), stop with ``stop()``."""

    data_dir: Path
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    cert_dir: Path | None = None
    function_key: str = DEFAULT_FUNCTION_KEY
    extra_settings: Mapping[str, str] = field(default_factory=dict)
    # More environment for single children, by name ("azurite", "keyvault", "graphsim",
    # "devhost"): tests run the simulator's clock under libfaketime this way.
    child_env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    log_dir: Path | None = None  # None: children print to this process's stdout
    in_memory_storage: bool = False
    # Azurite's debug log (one line per request it serves): benchmarks count storage
    # operations from it, on the server's side, whatever client made them.
    azurite_debug_log: Path | None = None
    children: list[_Child] = field(default_factory=list)
    settings: dict[str, str] = field(default_factory=dict)
    # A plain flag, not a threading.Event: a signal handler that took the Event's lock while
    # the main thread held it would wait for itself.
    stop_requested: bool = False

    def request_stop(self) -> None:
        """Ask a running ``start()`` or supervisor loop to stop; safe in a signal handler."""
        self.stop_requested = True

    @classmethod
    def on_free_ports(cls, data_dir: Path, **kwargs: Any) -> LocalStack:
        ports = {name: free_port() for name in DEFAULT_PORTS}
        kwargs.setdefault("cert_dir", data_dir / "certs")
        kwargs.setdefault("log_dir", data_dir / "logs")
        kwargs.setdefault("in_memory_storage", True)
        return cls(data_dir=data_dir, ports=ports, **kwargs)

    # --- addresses ------------------------------------------------------------------------

    @property
    def storage_connection(self) -> str:
        p = self.ports
        return azurite_connection_string(p["AZURITE_BLOB_PORT"], p["AZURITE_QUEUE_PORT"], p["AZURITE_TABLE_PORT"])

    @property
    def keyvault_url(self) -> str:
        return f"https://127.0.0.1:{self.ports['KEYVAULT_PORT']}"

    @property
    def graphsim_url(self) -> str:
        return f"https://127.0.0.1:{self.ports['GRAPHSIM_PORT']}"

    @property
    def devhost_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['DEVHOST_PORT']}"

    @property
    def ca_file(self) -> Path:
        return (self.cert_dir or PROJECT_ROOT / ".devstack" / "certs") / "ca.pem"

    # --- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _base_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        if self.cert_dir is not None:
            env["DEVSTACK_CERT_DIR"] = str(self.cert_dir)
        env["REQUESTS_CA_BUNDLE"] = str(self.ca_file)
        env.update({name: str(port) for name, port in self.ports.items()})
        return env

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        log: IO[bytes] | None = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        process = subprocess.Popen(
            argv,
            cwd=PROJECT_ROOT,
            env={**env, **self.child_env.get(name, {})},
            stdout=log,
            stderr=subprocess.STDOUT if log is not None else None,
            start_new_session=True,  # its own process group: stop() takes all of it down
        )
        self.children.append(_Child(name, process, log))

    def start(self, timeout: float = 60.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        ensure_ca(self.ca_file.parent)
        env = self._base_env()
        try:
            self._start_azurite(env)
            self._spawn("keyvault", [sys.executable, "-m", "devstack.keyvault"], {
                **env, "KEYVAULT_HOST": "127.0.0.1",
                "KEYVAULT_DATA_FILE": "" if self.in_memory_storage else str(self.data_dir / "keyvault.json"),
            })
            self._spawn("graphsim", [sys.executable, "-m", "devstack.graphsim"], {**env, "GRAPHSIM_HOST": "127.0.0.1"})
            deadline = time.monotonic() + timeout
            self._wait_tcp("azurite", self.ports["AZURITE_TABLE_PORT"], deadline)
            self._wait_tcp("azurite", self.ports["AZURITE_QUEUE_PORT"], deadline)
            self._wait_http("keyvault", f"{self.keyvault_url}/secrets?api-version=7.4", deadline)
            self._wait_http("graphsim", f"{self.graphsim_url}/_sim/health", deadline)
            self.settings = self._app_settings()
            self._check_stop()
            self._spawn("devhost", [sys.executable, "-m", "devstack.devhost"], {
                **env, **self.settings, "DEVHOST_HOST": "127.0.0.1", "DEVHOST_FUNCTION_KEY": self.function_key,
            })
            self._wait_http("devhost", f"{self.devhost_url}/api/health", deadline)
        except BaseException:
            self.stop()
            raise

    def _start_azurite(self, env: dict[str, str]) -> None:
        azurite = PROJECT_ROOT / "node_modules" / ".bin" / "azurite"
        if not azurite.exists():
            raise RuntimeError("Azurite is not installed: run `npm ci` (make does it)")
        argv = [
            str(azurite), "--silent", "--skipApiVersionCheck", "--loose", "--disableProductStyleUrl", "--disableTelemetry",
            "--blobHost", "127.0.0.1", "--queueHost", "127.0.0.1", "--tableHost", "127.0.0.1",
            "--blobPort", str(self.ports["AZURITE_BLOB_PORT"]),
            "--queuePort", str(self.ports["AZURITE_QUEUE_PORT"]),
            "--tablePort", str(self.ports["AZURITE_TABLE_PORT"]),
        ]
        # Azurite refuses --location together with --inMemoryPersistence.
        argv += ["--inMemoryPersistence"] if self.in_memory_storage else ["--location", str(self.data_dir / "azurite")]
        if self.azurite_debug_log is not None:
            argv += ["--debug", str(self.azurite_debug_log)]
        self._spawn("azurite", argv, env)

    def _app_settings(self) -> dict[str, str]:
        """The app's settings for this stack: local.settings.json and the environment, pointed
        at these ports."""
        addresses = {
            "AzureWebJobsStorage": self.storage_connection,
            "KEY_VAULT_URL": self.keyvault_url,
            "MICROSOFT_AUTHORITY_HOST": self.graphsim_url,
            "GRAPH_API_ENDPOINT": f"{self.graphsim_url}/v1.0",
            "PUBLIC_BASE_URL": self.devhost_url,
            "REQUESTS_CA_BUNDLE": str(self.ca_file),
        }
        redirect_uri = f"{self.devhost_url}/api/auth/callback"
        if redirect_uri != DEFAULT_REDIRECT_URI:
            # The simulator's default app knows only the default redirect URI: register one.
            app = self.sim("POST", "/_sim/apps", json={"displayName": "connector", "redirectUris": [redirect_uri]})
            addresses["MICROSOFT_CLIENT_ID"] = app["clientId"]
            addresses["MICROSOFT_CLIENT_SECRET"] = app["clientSecret"]
        values = app_settings(load_local_settings(), os.environ, addresses)
        values.update(self.extra_settings)
        return values

    def _child_failed(self, name: str) -> str | None:
        for child in self.children:
            if child.name == name and child.process.poll() is not None:
                return f"{name} exited with code {child.process.returncode}{self._log_tail(name)}"
        return None

    def _log_tail(self, name: str) -> str:
        if self.log_dir is None:
            return ""
        path = self.log_dir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n--- last lines of its log ---\n" + "\n".join(text.splitlines()[-30:])

    def _check_stop(self) -> None:
        if self.stop_requested:
            raise StackStopped("stop requested while the stack was starting")

    def _wait_tcp(self, name: str, port: int, deadline: float) -> None:
        while time.monotonic() < deadline:
            self._check_stop()
            failure = self._child_failed(name)
            if failure:
                raise RuntimeError(failure)
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not listen on port {port} in time{self._log_tail(name)}")

    def _wait_http(self, name: str, url: str, deadline: float) -> None:
        import requests

        while time.monotonic() < deadline:
            self._check_stop()
            failure = self._child_failed(name)
            if failure:
                raise RuntimeError(failure)
            try:
                requests.get(url, timeout=2, verify=str(self.ca_file))
                return  # any HTTP answer means it is serving
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError(f"{name} did not answer {url} in time{self._log_tail(name)}")

    def stop(self, grace: float = 10.0) -> None:
        """Terminate every child's process group; SIGKILL what is left after ``grace`` s.

        Idempotent. The supervisor's signal handlers only set a flag, so a signal that
        arrives meanwhile cannot cut it short.
        """
        children = list(reversed(self.children))
        for child in children:
            # The whole group, even when its leader has exited: what it started may live on.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in children:
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for child in children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(timeout=5)
            if child.log is not None:
                child.log.close()
            with contextlib.suppress(ValueError):
                self.children.remove(child)

    # --- conveniences for tests, the demo and operators ------------------------------------

    def sim(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call the simulator's control API; returns the JSON body (None when empty)."""
        import requests

        response = requests.request(method, f"{self.graphsim_url}{path}", verify=str(self.ca_file), timeout=15, **kwargs)
        response.raise_for_status()
        return response.json() if response.content else None
