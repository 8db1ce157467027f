"""The one place where the connector is wired together.

``services()`` builds the process-wide ``Services`` on first use. Each adapter is built
lazily the first time it is asked for, so the webhook (which needs only the settings)
never imports or connects the heavy SDKs on a cold start. Tests build their own
``Services`` with fakes passed as keyword arguments, or install one with ``use()``.
"""

from __future__ import annotations

import datetime as dt
import threading
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

from shared.clock import SystemClock
from shared.config import Settings

if TYPE_CHECKING:
    from shared.models import Subscription
    from shared.ports import (
        AccountOwnerIndex,
        AccountStore,
        AuthFlowStore,
        CheckpointStore,
        Clock,
        ConnectSessionStore,
        DriveApi,
        ExpiredRowPurger,
        FolderDeltaLinks,
        GraphApi,
        GraphMail,
        IdentityPlatform,
        MailCommandLog,
        MailLedger,
        QueueSender,
        SecretStore,
        SubscriptionStore,
        TokenProvider,
    )
    from shared.sync_joining import BurstBook


class Services:
    """Adapters behind the ports, each built once and only when first needed."""

    def __init__(self, settings: Settings, **overrides: Any) -> None:
        self.settings = settings
        # A value given here (a fake, in tests) takes the place of the real adapter.
        for name, value in overrides.items():
            if not isinstance(getattr(type(self), name, None), cached_property):
                raise TypeError(f"Services has no adapter named {name!r}")
            self.__dict__[name] = value

    @cached_property
    def clock(self) -> Clock:
        return SystemClock()

    @cached_property
    def accounts(self) -> AccountStore:
        from shared.adapters.tables import TableAccountStore

        return TableAccountStore(self.settings.storage_connection)

    @cached_property
    def subscriptions(self) -> SubscriptionStore:
        from shared.adapters.tables import TableSubscriptionStore

        return TableSubscriptionStore(self.settings.storage_connection)

    @cached_property
    def authflows(self) -> AuthFlowStore:
        from shared.adapters.tables import TableAuthFlowStore

        return TableAuthFlowStore(self.settings.storage_connection)

    @cached_property
    def connect_sessions(self) -> ConnectSessionStore:
        from shared.adapters.sessions import TableConnectSessionStore

        return TableConnectSessionStore(self.settings.storage_connection)

    @cached_property
    def account_owners(self) -> AccountOwnerIndex:
        from shared.adapters.sessions import TableAccountOwnerIndex

        return TableAccountOwnerIndex(self.settings.storage_connection)

    @cached_property
    def purger(self) -> ExpiredRowPurger:
        from shared.adapters.sessions import TableExpiredRowPurger

        return TableExpiredRowPurger(self.settings.storage_connection)

    @cached_property
    def checkpoints(self) -> CheckpointStore:
        from shared.adapters.tables import TableCheckpointStore

        return TableCheckpointStore(self.settings.storage_connection)

    @cached_property
    def secrets(self) -> SecretStore:
        from shared.adapters.keyvault import KeyVaultSecretStore

        return KeyVaultSecretStore(self.settings.key_vault_url)

    @cached_property
    def queues(self) -> QueueSender:
        from shared.adapters.queues import StorageQueueSender

        return StorageQueueSender(self.settings.storage_connection)

    @cached_property
    def graph(self) -> GraphApi:
        from shared.adapters.graph import RequestsGraphApi

        return RequestsGraphApi(self.settings.graph_endpoint, delta_body=self.settings.event_body)

    @cached_property
    def mail(self) -> GraphMail:
        # The one Graph client serves the mail actions too: one retry policy, and one
        # cap of 4 concurrent requests per mailbox for everything this process sends.
        return cast("GraphMail", self.graph)

    @cached_property
    def command_log(self) -> MailCommandLog:
        from shared.adapters.command_log import TableMailCommandLog

        return TableMailCommandLog(self.settings.storage_connection)

    @cached_property
    def drive(self) -> DriveApi:
        from shared.adapters.graph_drive import RequestsDriveApi

        return RequestsDriveApi(self.settings.graph_endpoint)

    @cached_property
    def ledger(self) -> MailLedger:
        from shared.adapters.ledger import TableMailLedger

        return TableMailLedger(self.settings.storage_connection)

    @cached_property
    def folder_deltas(self) -> FolderDeltaLinks:
        from shared.adapters.folder_deltas import TableFolderDeltaLinks

        return TableFolderDeltaLinks(self.settings.storage_connection)

    @cached_property
    def identity(self) -> IdentityPlatform:
        from shared.adapters.identity import MsalIdentity

        return MsalIdentity(self.settings)

    @cached_property
    def tokens(self) -> TokenProvider:
        from shared.tokens import CachedTokenProvider

        return CachedTokenProvider(self)

    # In-process state of the notification path, kept with the services it was read
    # through (not in module globals keyed by id(), which a new services object given a
    # freed one's address would find). ``setdefault`` on the instance dict: two threads
    # asking first get one object.

    @cached_property
    def subscription_records(self) -> dict[tuple[str, str], tuple[Subscription, dt.datetime]]:
        """Subscription records read for change notifications, by account and subscription
        id, with when they were read (shared/notifications.py)."""
        records: dict[tuple[str, str], tuple[Subscription, dt.datetime]] = self.__dict__.setdefault(
            "subscription_records", {}
        )
        return records

    @cached_property
    def bursts(self) -> BurstBook:
        """Triggers served already and rounds they join (shared/sync_joining.py)."""
        from shared.sync_joining import BurstBook

        book: BurstBook = self.__dict__.setdefault("bursts", BurstBook())
        return book


_lock = threading.Lock()
_settings: Settings | None = None
_services: Services | None = None


def settings() -> Settings:
    """The process's settings, read and validated once."""
    global _settings
    if _settings is None:
        with _lock:
            if _settings is None:
                _settings = Settings.from_env()
    return _settings


def services() -> Services:
    """The process's services, built once."""
    global _services
    if _services is None:
        current = settings()
        with _lock:
            if _services is None:
                _services = Services(current)
    return _services


def use(replacement: Services | None) -> None:
    """Install (or with None, forget) the process's services; for tests and tools."""
    global _services, _settings
    with _lock:
        _services = replacement
        _settings = replacement.settings if replacement is not None else None
