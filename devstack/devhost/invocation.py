"""One function invocation: bind the trigger and outputs to parameters, call, collect outputs.

The worker of the Functions host passes each binding to the parameter of the same name
(``arg_name``), a ``context`` parameter gets the invocation context, and output bindings
receive a ``func.Out`` whose value the host writes after the function returned. Outputs of
a failed invocation are discarded, as the host discards them.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import azure.functions as func
from azure.functions import _abc as functions_abc

logger = logging.getLogger("devstack.devhost")

T = TypeVar("T")

RETURN = "$return"
HTTP_TRIGGER = "httpTrigger"
TIMER_TRIGGER = "timerTrigger"
QUEUE_TRIGGER = "queueTrigger"
QUEUE = "queue"
HTTP = "http"


class UnsupportedBinding(RuntimeError):
    """The function uses a binding the devhost does not provide."""


class OutputBinding(Generic[T], func.Out[T]):
    """The value of an output binding, as ``func.Out`` describes it."""

    def __init__(self) -> None:
        self._value: T | None = None

    def set(self, val: T) -> None:
        self._value = val

    def get(self) -> T:
        return self._value  # type: ignore[return-value]


class _TraceContext(functions_abc.TraceContext):
    def __init__(self) -> None:
        self._traceparent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"

    @property
    def trace_state(self) -> str:
        return ""

    @property
    def trace_parent(self) -> str:
        return self._traceparent

    @property
    def attributes(self) -> dict[str, str]:
        return {}


class _RetryContext(functions_abc.RetryContext):
    def __init__(self, retry_count: int = 0) -> None:
        self._retry_count = retry_count

    @property
    def retry_count(self) -> int:
        return self._retry_count

    @property
    def max_retry_count(self) -> int:
        return 0

    @property
    def exception(self) -> functions_abc.RpcException:
        return None  # type: ignore[return-value]


class InvocationContext(func.Context):
    """The ``context`` argument: invocation id and function name, as the worker passes them."""

    def __init__(self, invocation_id: str, function_name: str, function_directory: str) -> None:
        self._invocation_id = invocation_id
        self._function_name = function_name
        self._function_directory = function_directory
        self._thread_local_storage = threading.local()
        self._thread_local_storage.invocation_id = invocation_id
        self._trace_context = _TraceContext()
        self._retry_context = _RetryContext()

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> Any:
        return self._thread_local_storage

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def trace_context(self) -> functions_abc.TraceContext:
        return self._trace_context

    @property
    def retry_context(self) -> functions_abc.RetryContext:
        return self._retry_context


@dataclass(frozen=True)
class Binding:
    """What the devhost needs of one binding of ``app.get_functions()``."""

    type: str
    direction: str
    name: str
    settings: Mapping[str, Any]

    @classmethod
    def from_metadata(cls, binding: Any) -> Binding:
        data = binding.get_dict_repr()
        direction = data.get("direction")
        direction_name = getattr(direction, "name", str(direction)).lower()
        return cls(type=str(data.get("type")), direction=direction_name, name=str(data.get("name")), settings=data)


@dataclass
class FunctionSpec:
    """A function of the app with its trigger and its bindings."""

    name: str
    handler: Callable[..., Any]
    trigger: Binding
    bindings: list[Binding]
    directory: str
    parameters: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_function(cls, function: Any, directory: str) -> FunctionSpec:
        handler = function.get_user_function()
        bindings = [Binding.from_metadata(binding) for binding in function.get_bindings()]
        trigger_type = function.get_trigger().get_dict_repr().get("type")
        trigger = next(binding for binding in bindings if binding.type == trigger_type)
        parameters = frozenset(inspect.signature(handler).parameters)
        return cls(function.get_function_name(), handler, trigger, bindings, directory, parameters)

    @property
    def outputs(self) -> list[Binding]:
        return [binding for binding in self.bindings if binding.direction == "out"]

    def unsupported_bindings(self) -> list[Binding]:
        supported_out = {QUEUE, HTTP}
        return [
            binding for binding in self.bindings
            if binding is not self.trigger and not (binding.direction == "out" and binding.type in supported_out)
        ]


@dataclass
class InvocationResult:
    invocation_id: str
    return_value: Any
    outputs: dict[str, Any]


def invoke(spec: FunctionSpec, trigger_value: Any, invocation_id: str | None = None) -> InvocationResult:
    """Call the function with its bindings; exceptions of the function propagate."""
    invocation_id = invocation_id or str(uuid.uuid4())
    unsupported = spec.unsupported_bindings()
    if unsupported:
        names = ", ".join(f"{binding.name} ({binding.type})" for binding in unsupported)
        raise UnsupportedBinding(f"devhost does not provide the binding(s) {names}")
    arguments: dict[str, Any] = {}
    outputs: dict[str, OutputBinding[Any]] = {}
    for binding in spec.bindings:
        if binding is spec.trigger:
            arguments[binding.name] = trigger_value
        elif binding.direction == "out" and binding.name != RETURN:
            outputs[binding.name] = arguments[binding.name] = OutputBinding()
    if "context" in spec.parameters and "context" not in arguments:
        arguments["context"] = InvocationContext(invocation_id, spec.name, spec.directory)
    arguments = {name: value for name, value in arguments.items() if name in spec.parameters}
    result = spec.handler(**arguments)
    if inspect.isawaitable(result):
        result = asyncio.run(_await(result))
    return InvocationResult(invocation_id, result, {name: out.get() for name, out in outputs.items()})


async def _await(awaitable: Any) -> Any:
    return await awaitable
