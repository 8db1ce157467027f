"""What the devhost reads before it serves: host.json, local.settings.json and app settings.

The Functions host takes its queue and HTTP options from ``host.json`` and, under
``func start``, its app settings from the ``Values`` of ``local.settings.json``; variables
already present in the environment win. Bindings name app settings either directly
(``connection="AzureWebJobsStorage"``) or inside ``%...%`` (``schedule="%RENEWAL_SCHEDULE%"``),
resolved here from the environment, as the host resolves them from its app settings.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The host's own defaults (Microsoft docs "host.json reference for Azure Functions 2.x and later",
# section "queues" and "http").
DEFAULT_ROUTE_PREFIX = "api"
DEFAULT_MAX_POLLING_INTERVAL = 60.0
DEFAULT_VISIBILITY_TIMEOUT = 0.0
DEFAULT_BATCH_SIZE = 16
MAX_BATCH_SIZE = 32
DEFAULT_MAX_DEQUEUE_COUNT = 5
DEFAULT_FUNCTION_TIMEOUT = 600.0

_TIMESPAN = re.compile(r"^(?:(?P<days>\d+)\.)?(?P<h>\d+):(?P<m>\d+):(?P<s>\d+(?:\.\d+)?)$")
_SETTING_REF = re.compile(r"%([^%]+)%")


class SettingNotFound(KeyError):
    """A binding names an app setting that is not set."""

    def __str__(self) -> str:
        return f"app setting {self.args[0]!r} is not set"


def parse_timespan(value: str | int | float) -> float:
    """Seconds in a .NET TimeSpan string such as ``00:00:05`` or ``1.02:00:00.500``."""
    if isinstance(value, int | float):
        return float(value)
    match = _TIMESPAN.match(value.strip())
    if not match:
        raise ValueError(f"not a TimeSpan: {value!r}")
    days = int(match["days"] or 0)
    return days * 86400 + int(match["h"]) * 3600 + int(match["m"]) * 60 + float(match["s"])


def resolve_setting_refs(value: str, environ: Mapping[str, str] | None = None) -> str:
    """Replace every ``%NAME%`` in a binding value with the app setting NAME."""
    env = os.environ if environ is None else environ

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise SettingNotFound(name)
        return env[name]

    return _SETTING_REF.sub(lookup, value)


def load_local_settings(path: Path, environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Copy ``Values`` of local.settings.json into the environment without overriding it.

    Returns the names that were set. A missing file is not an error, as with ``func start``.
    """
    env = os.environ if environ is None else environ
    if not path.is_file():
        return []
    data = json.loads(path.read_text(encoding="utf-8"))
    applied = []
    for name, value in (data.get("Values") or {}).items():
        if name not in env and value is not None:
            env[name] = str(value)
            applied.append(name)
    return applied


@dataclass(frozen=True)
class QueueOptions:
    max_polling_interval: float = DEFAULT_MAX_POLLING_INTERVAL
    visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT
    batch_size: int = DEFAULT_BATCH_SIZE
    new_batch_threshold: int = DEFAULT_BATCH_SIZE // 2
    max_dequeue_count: int = DEFAULT_MAX_DEQUEUE_COUNT
    base64: bool = True


@dataclass(frozen=True)
class HostConfig:
    route_prefix: str = DEFAULT_ROUTE_PREFIX
    queues: QueueOptions = QueueOptions()
    function_timeout: float = DEFAULT_FUNCTION_TIMEOUT

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HostConfig:
        extensions = data.get("extensions") or {}
        http = extensions.get("http") or {}
        queues = extensions.get("queues") or {}
        prefix = http.get("routePrefix", DEFAULT_ROUTE_PREFIX)
        batch_size = min(int(queues.get("batchSize", DEFAULT_BATCH_SIZE)), MAX_BATCH_SIZE)
        options = QueueOptions(
            max_polling_interval=parse_timespan(queues.get("maxPollingInterval", DEFAULT_MAX_POLLING_INTERVAL)),
            visibility_timeout=parse_timespan(queues.get("visibilityTimeout", DEFAULT_VISIBILITY_TIMEOUT)),
            batch_size=max(batch_size, 1),
            new_batch_threshold=max(int(queues.get("newBatchThreshold", batch_size // 2)), 0),
            max_dequeue_count=max(int(queues.get("maxDequeueCount", DEFAULT_MAX_DEQUEUE_COUNT)), 1),
            base64=str(queues.get("messageEncoding", "base64")).lower() != "none",
        )
        timeout_value = data.get("functionTimeout")
        timeout = DEFAULT_FUNCTION_TIMEOUT
        if timeout_value and str(timeout_value) != "-1":
            timeout = parse_timespan(timeout_value)
        return cls(route_prefix=str(prefix or "").strip("/"), queues=options, function_timeout=timeout)

    @classmethod
    def load(cls, path: Path | None) -> HostConfig:
        if path is None or not path.is_file():
            return cls()
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
