"""A delta sync of any resource of an account: the one entry point processing, the
renewal's catch-up, queued jobs and operators call (``shared.resources``).

Each resource's rounds live in the module it names (``Resource.sync_module``, whose
``SYNC_TARGET`` they are); that module is imported when a sync of the resource first runs,
so a process that only ever syncs mail never loads the drive's code, and the webhook's
cold path loads neither.
"""

from __future__ import annotations

import datetime as dt
import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from shared.delta_round import SyncResult
from shared.resources import Resource
from shared.sync_runner import SyncTarget, run_sync

if TYPE_CHECKING:
    from shared.bootstrap import Services

_targets: dict[str, SyncTarget] = {}


def sync_target(resource: Resource) -> SyncTarget:
    target = _targets.get(resource.sync_module)
    if target is None:
        target = importlib.import_module(resource.sync_module).SYNC_TARGET
        if not isinstance(target, SyncTarget) or target.resource is not resource:
            raise TypeError(f"{resource.sync_module}.SYNC_TARGET is not the sync of {resource.kind}")
        _targets[resource.sync_module] = target
    return target


def sync_resource(
    services: Services,
    account_id: str,
    resource: Resource,
    *,
    reason: str,
    notified_at: dt.datetime | None = None,
    monotonic: Callable[[], float] | None = None,
    join: bool = False,
) -> SyncResult:
    """Bring the account's events of ``resource`` up to date (``shared.sync_runner.run_sync``)."""
    return run_sync(
        services,
        account_id,
        sync_target(resource),
        reason=reason,
        notified_at=notified_at,
        monotonic=monotonic,
        join=join,
    )
