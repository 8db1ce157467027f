"""DevHost: serves a Python v2 function app the way the Functions host does, in-process.

Everything comes from the app's own binding metadata (``app.get_functions()``): HTTP routes,
their methods and auth levels, timer schedules, queue triggers and queue outputs. Settings
come from the environment, filled in from ``local.settings.json`` as ``func start`` does,
and queue and HTTP options from ``host.json``.

    with DevHost(app_module="function_app", port=0) as host:
        requests.get(f"{host.base_url}/api/health")
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

import azure.functions as func

from .config import HostConfig, SettingNotFound, load_local_settings, resolve_setting_refs
from .http import (
    Frontend,
    HttpRoute,
    IncomingRequest,
    Keys,
    MalformedBody,
    RequestTooLarge,
    Response,
    from_function_response,
    serve,
)
from .invocation import (
    HTTP_TRIGGER,
    QUEUE,
    QUEUE_TRIGGER,
    RETURN,
    TIMER_TRIGGER,
    FunctionSpec,
    InvocationResult,
    invoke,
)
from .ncrontab import parse_schedule
from .queues import DEFAULT_CONNECTION, QueueClients, QueueListener, manual_message, message_bodies
from .streams import (
    INIT_INDEXING,
    as_asgi_response,
    asgi_scope,
    init_indexing_enabled,
    make_request,
    send_response,
    takes_streams_request,
)
from .timers import TimerRunner, timer_request, utc_now

logger = logging.getLogger("devstack.devhost")

# Not a secret: the documented key of every local devhost, like Azurite's well-known account key.
DEFAULT_FUNCTION_KEY = "devstack-local-function-key"
DEFAULT_PORT = 7071
STOP_TIMEOUT_SECONDS = 10.0


class DevHostError(RuntimeError):
    """The app cannot be served (import failure, bad route or schedule, port in use)."""


def load_function_app(app_module: str) -> func.FunctionApp:
    """Import ``module`` or ``module:attribute`` (default attribute ``app``)."""
    module_name, _, attribute = app_module.partition(":")
    module = importlib.import_module(module_name)
    app = getattr(module, attribute or "app", None)
    if not isinstance(app, func.FunctionApp):
        raise DevHostError(f"{app_module!r} has no FunctionApp named {attribute or 'app'!r}")
    return app


def function_metadata(app: func.FunctionApp) -> list[Any]:
    # azure-functions 1.26 remembers the names it validated in ``functions_bindings`` and
    # then refuses a second get_functions() call; the devhost and the app's own tests
    # may both ask in one process.
    app.functions_bindings = {}
    return list(app.get_functions())


class DevHost:
    """The local Functions host. ``start()`` returns once it serves; ``stop()`` ends every thread."""

    def __init__(
        self,
        app_module: str = "function_app",
        host: str = "127.0.0.1",
        port: int = 0,
        function_key: str | None = None,
        master_key: str | None = None,
        host_json: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        app_dir: str | Path | None = None,
        local_settings: str | Path | None = None,
        functions: Iterable[str] | None = None,
    ) -> None:
        self.app_module = app_module
        self.app_dir = Path(app_dir) if app_dir is not None else Path.cwd()
        self.host = host
        self.port = port
        self.function_key = function_key or os.environ.get("DEVHOST_FUNCTION_KEY") or DEFAULT_FUNCTION_KEY
        self.master_key = master_key or os.environ.get("DEVHOST_MASTER_KEY") or self.function_key
        self.host_json = Path(host_json) if host_json is not None else self.app_dir / "host.json"
        self.local_settings = (
            Path(local_settings) if local_settings is not None else self.app_dir / "local.settings.json"
        )
        self.env = dict(env or {})
        self.only_functions = set(functions) if functions is not None else None
        self.config = HostConfig()
        self.specs: dict[str, FunctionSpec] = {}
        self.routes: list[HttpRoute] = []
        self.errors: dict[str, str] = {}
        self.http_streams = False  # the app's HTTP functions take FastAPI's Request (devstack/devhost/streams.py)
        self._saved_environ: dict[str, str | None] = {}
        self._stop = threading.Event()
        self._server: Any = None
        self._server_thread: threading.Thread | None = None
        self._timers: dict[str, TimerRunner] = {}
        self._listeners: list[QueueListener] = []
        self._listening: dict[tuple[str, str], list[QueueListener]] = {}  # (connection, queue) -> listeners
        self._queue_clients = QueueClients(os.environ)
        self._background: ThreadPoolExecutor | None = None
        self._started = False

    # ----------------------------------------------------------------- lifecycle
    @property
    def base_url(self) -> str:
        if self._server is None:
            raise DevHostError("the devhost is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> DevHost:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def start(self) -> DevHost:
        if self._started:
            return self
        self._started = True
        self._stop.clear()
        self.errors = {}
        try:
            self._apply_environment()
            self.config = HostConfig.load(self.host_json)
            self._load_functions()
            self._background = ThreadPoolExecutor(max_workers=4, thread_name_prefix="devhost-admin")
            frontend = Frontend(self.routes, self.config.route_prefix, Keys(self.function_key, self.master_key),
                                self._run_http, self._admin)
            try:
                self._server = serve((self.host, self.port), frontend)
            except OSError as error:
                raise DevHostError(f"cannot listen on {self.host}:{self.port}: {error}") from error
            self._server_thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="devhost-http", daemon=True)
            self._server_thread.start()
            self._start_triggers()
        except BaseException:
            self.stop()
            raise
        logger.info("devhost serving %s at %s", self.app_module, self.base_url)
        return self

    def stop(self) -> None:
        if not self._started:
            return
        self._stop.set()
        if self._server is not None:
            if self._server_thread is not None and self._server_thread.is_alive():
                self._server.shutdown()
            self._server.close_connections()
            self._server.server_close()
        for runner in self._timers.values():
            runner.join(STOP_TIMEOUT_SECONDS)
        for listener in self._listeners:
            listener.join(STOP_TIMEOUT_SECONDS)
        if self._background is not None:
            self._background.shutdown(wait=True, cancel_futures=True)
        self._queue_clients.close()
        self._timers.clear()
        self._listeners.clear()
        self._listening.clear()
        self._restore_environment()
        self._server = None
        self._started = False

    # ----------------------------------------------------------------- setup
    def _set_env(self, name: str, value: str) -> None:
        if name not in self._saved_environ:
            self._saved_environ[name] = os.environ.get(name)
        os.environ[name] = value

    def _apply_environment(self) -> None:
        for name, value in self.env.items():
            self._set_env(name, value)
        pending: dict[str, str] = {}
        applied = load_local_settings(self.local_settings, pending)
        for name in applied:
            if name not in os.environ:
                self._set_env(name, pending[name])
        if applied:
            logger.info("devhost loaded %d settings from %s", len(applied), self.local_settings)

    def _restore_environment(self) -> None:
        for name, value in self._saved_environ.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_environ.clear()

    def _load_functions(self) -> None:
        directory = str(self.app_dir)
        if directory not in sys.path:
            sys.path.insert(0, directory)
        app = load_function_app(self.app_module)
        wanted = self.only_functions
        if wanted is None and self.host_json.is_file():
            listed = json.loads(self.host_json.read_text(encoding="utf-8")).get("functions")
            wanted = set(listed) if listed else None
        self.specs = {}
        self.routes = []
        for function in function_metadata(app):
            spec = FunctionSpec.from_function(function, directory)
            if wanted is not None and spec.name not in wanted:
                continue
            self.specs[spec.name] = spec
            for binding in spec.unsupported_bindings():
                logger.warning("function %s: binding %s (%s) is not provided by the devhost; it will fail",
                               spec.name, binding.name, binding.type)
            if spec.trigger.type == HTTP_TRIGGER:
                self.routes.append(HttpRoute.from_spec(spec))
        self._check_http_streams()

    def _check_http_streams(self) -> None:
        """HTTP streams are all or nothing for an app, and need init indexing (streams.py)."""
        http = [spec for spec in self.specs.values() if spec.trigger.type == HTTP_TRIGGER]
        streaming = {spec.name for spec in http if takes_streams_request(spec)}
        self.http_streams = bool(streaming)
        if not streaming:
            return
        for spec in http:
            if not init_indexing_enabled():
                self.errors[spec.name] = (f"the app uses HTTP streams, which the worker serves only with the app "
                                          f"setting {INIT_INDEXING}=1")
            elif spec.name not in streaming:
                self.errors[spec.name] = ("the app uses HTTP streams, so every HTTP function must take the "
                                          "extension's Request: a func.HttpRequest trigger does not load")
            else:
                continue
            logger.error("function %s: %s", spec.name, self.errors[spec.name])

    def _start_triggers(self) -> None:
        for spec in self.specs.values():
            try:
                if spec.trigger.type == TIMER_TRIGGER:
                    self._start_timer(spec)
                elif spec.trigger.type == QUEUE_TRIGGER:
                    self._start_queue_listener(spec)
                elif spec.trigger.type != HTTP_TRIGGER:
                    self.errors[spec.name] = f"trigger {spec.trigger.type} is not provided by the devhost"
                    logger.error("function %s: %s", spec.name, self.errors[spec.name])
            except (SettingNotFound, ValueError, RuntimeError) as error:
                # As the host does: the function is in error, the others run.
                self.errors[spec.name] = str(error)
                logger.error("function %s cannot start: %s", spec.name, error)

    def _start_timer(self, spec: FunctionSpec) -> None:
        settings = spec.trigger.settings
        schedule = parse_schedule(resolve_setting_refs(str(settings.get("schedule", ""))))
        schedule.next_after(utc_now())  # a schedule that never matches fails here, not in its thread
        runner = TimerRunner(
            spec.name, schedule, bool(settings.get("runOnStartup", False)),
            lambda request: self._run_in_background(spec, request), self._stop)
        self._timers[spec.name] = runner
        runner.start()

    def _start_queue_listener(self, spec: FunctionSpec) -> None:
        settings = spec.trigger.settings
        queue_name = resolve_setting_refs(str(settings.get("queueName", ""))).lower()
        connection = settings.get("connection")
        self._queue_clients.connection_string(connection)  # fails now if the setting is missing
        listener = QueueListener(
            spec.name,
            lambda: self._queue_clients.get(connection, queue_name),
            lambda: self._queue_clients.get(connection, f"{queue_name}-poison"),
            self.config.queues,
            lambda message: self._run_in_background(spec, message),
            self._stop,
            self.config.function_timeout,
        )
        self._listeners.append(listener)
        self._listening.setdefault((connection or DEFAULT_CONNECTION, queue_name), []).append(listener)
        listener.start()

    # ----------------------------------------------------------------- invocations
    def _execute(self, spec: FunctionSpec, trigger_value: Any) -> InvocationResult:
        invocation_id = str(uuid.uuid4())
        started = time.perf_counter()
        try:
            result = invoke(spec, trigger_value, invocation_id)
            self._write_outputs(spec, result)
        except Exception:
            logger.exception("Executed 'Functions.%s' (Failed, Id=%s, Duration=%.0fms)", spec.name, invocation_id,
                             (time.perf_counter() - started) * 1000)
            raise
        logger.info("Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%.0fms)", spec.name, invocation_id,
                    (time.perf_counter() - started) * 1000)
        return result

    def _run_in_background(self, spec: FunctionSpec, trigger_value: Any) -> bool:
        """Runs a non-HTTP function; a failure is logged (by _execute) and reported as False."""
        try:
            self._execute(spec, trigger_value)
        except Exception:  # noqa: BLE001 - a failing function never stops the host
            return False
        return True

    def _write_outputs(self, spec: FunctionSpec, result: InvocationResult) -> None:
        for binding in spec.outputs:
            if binding.type != QUEUE:
                continue
            value = result.return_value if binding.name == RETURN else result.outputs.get(binding.name)
            bodies = message_bodies(value)
            if not bodies:
                continue
            queue_name = resolve_setting_refs(str(binding.settings.get("queueName", ""))).lower()
            connection = binding.settings.get("connection")
            self._queue_clients.send(connection, queue_name, bodies, self.config.queues.base64)
            for listener in self._listening.get((connection or DEFAULT_CONNECTION, queue_name), ()):
                listener.wake()

    def _run_http(self, route: HttpRoute, request: IncomingRequest, route_params: dict[str, str]) -> Response:
        if route.spec.name in self.errors:
            return Response(500)  # as the host answers for a function that failed to load
        if self.http_streams:
            return self._run_http_streams(route, request, route_params)
        body = request.read_body()  # RequestTooLarge and MalformedBody become 413 and 400 at the edge
        http_request = func.HttpRequest(
            request.method, request.url, headers=request.headers, params=request.params,
            route_params=route_params, body=body)
        try:
            result = self._execute(route.spec, http_request)
            return from_function_response(self._http_output(route, result))
        except Exception:  # noqa: BLE001 - the caller sees a bare 500, the log has the details
            return Response(500)

    @staticmethod
    def _http_output(route: HttpRoute, result: InvocationResult) -> Any:
        http_output = next((b.name for b in route.spec.outputs if b.type == "http" and b.name != RETURN), None)
        return result.outputs.get(http_output) if http_output else result.return_value

    def _run_http_streams(self, route: HttpRoute, request: IncomingRequest, route_params: dict[str, str]) -> Response:
        """The function gets a Starlette request whose body it reads as it arrives; its
        response goes out as the ASGI app sends it (streams.py). A body over the limit
        found before the response began is a 413, as from the host."""
        scope = asgi_scope(request.method, request.url, request.raw_headers, request.client, request.server,
                           route_params)
        streams_request = make_request(scope, request.read_piece, request.has_body)
        try:
            result = self._execute(route.spec, streams_request)
            response = as_asgi_response(self._http_output(route, result))
        except (RequestTooLarge, MalformedBody):
            raise
        except Exception:  # noqa: BLE001 - the caller sees a bare 500, the log has the details
            return Response(500)
        writer = request.writer
        try:
            send_response(response, scope, writer)
        except Exception as error:  # noqa: BLE001 - the client went away, or the body's source failed
            if not writer.started:
                logger.exception("Function %s: its response could not be sent", route.spec.name)
                return Response(500)
            logger.warning("Function %s: the response broke off after it began: %s", route.spec.name,
                           type(error).__name__)
        return Response.streamed(writer.status)

    # ----------------------------------------------------------------- admin API
    def _admin(self, request: IncomingRequest) -> Response:
        segments = [segment for segment in request.path.split("/") if segment][1:]
        if segments == ["host", "ping"]:
            return Response(200)
        if not self._server.frontend.keys.is_master(request.key):
            return Response.text(401)
        if segments == ["host", "status"] and request.method == "GET":
            return Response.json(200, self.status())
        if segments == ["functions"] and request.method == "GET":
            return Response.json(200, [self._describe(spec) for spec in self.specs.values()])
        if len(segments) == 2 and segments[0] == "functions":
            if request.method != "POST":
                return Response(405, b"", (("Allow", "POST"),))
            return self._admin_invoke(segments[1], request)
        return Response.text(404)

    def _admin_invoke(self, name: str, request: IncomingRequest) -> Response:
        spec = next((s for s in self.specs.values() if s.name.lower() == name.lower()), None)
        if spec is None:
            return Response.text(404)
        raw = request.read_body()
        try:
            payload = json.loads(raw) if raw.strip() else {}
        except ValueError:
            return Response.text(400, "body must be JSON")
        text = payload.get("input") if isinstance(payload, dict) else None
        data = (text if isinstance(text, str) else json.dumps(text) if text is not None else "").encode("utf-8")
        assert self._background is not None
        if spec.trigger.type == TIMER_TRIGGER and spec.name in self._timers:
            self._background.submit(self._timers[spec.name].run_now)
        elif spec.trigger.type == TIMER_TRIGGER:
            self._background.submit(self._run_in_background, spec, timer_request(False, None, None, None))
        elif spec.trigger.type == QUEUE_TRIGGER:
            self._background.submit(self._run_in_background, spec, manual_message(data))
        else:
            return Response.text(400, "only non-HTTP functions can be run through the admin API")
        return Response(202)

    def status(self) -> dict[str, Any]:
        return {
            "state": "Running" if self._started else "Stopped",
            "functions": sorted(self.specs),
            "errors": self.errors,
        }

    def _describe(self, spec: FunctionSpec) -> dict[str, Any]:
        description: dict[str, Any] = {"name": spec.name, "trigger": spec.trigger.type}
        if spec.trigger.type == HTTP_TRIGGER:
            route = next(r for r in self.routes if r.spec is spec)
            prefix = f"/{self.config.route_prefix}" if self.config.route_prefix else ""
            description.update(
                route=f"{prefix}/{route.template.template.strip('/')}",
                methods=sorted(route.methods) if route.methods else None,
                authLevel=route.auth_level,
            )
        else:
            for key in ("schedule", "queueName", "runOnStartup"):
                if key in spec.trigger.settings:
                    description[key] = spec.trigger.settings[key]
        return description

    def describe(self) -> list[dict[str, Any]]:
        return [self._describe(spec) for spec in self.specs.values()]
