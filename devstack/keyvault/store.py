"""The emulator's state: secrets, their versions and the soft-deleted ones.

Plain Python with no HTTP in it: ``server.py`` turns requests into calls of ``SecretVault``
and the ``VaultError`` it raises into Key Vault's error document. The rules follow the
Key Vault secrets REST API (https://learn.microsoft.com/rest/api/keyvault/secrets):

- names are 1-127 letters, digits and dashes, compared case-insensitively;
- every set creates a new version (32 hex digits); the latest version is the current one;
- soft delete is always on ("Recoverable+Purgeable"): a deleted secret keeps its versions
  until it is purged, recovered, or its scheduled purge date passes, and its name cannot
  be set meanwhile (409 ``ObjectIsDeletedButRecoverable``);
- a value holds at most 25,600 bytes.

With a data file the state is written after every change (write-then-rename, mode 0600:
the file holds secret values), so a restarted emulator keeps its secrets.
"""

from __future__ import annotations

import copy
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NAME_PATTERN = re.compile(r"^[0-9A-Za-z-]{1,127}$")
MAX_VALUE_BYTES = 25 * 1024
MAX_CONTENT_TYPE_CHARS = 255
MAX_TAGS = 15
RECOVERY_LEVEL = "Recoverable+Purgeable"
DATA_FORMAT = 1

Json = dict[str, Any]


class VaultError(Exception):
    """A refusal in Key Vault's terms: HTTP status, error code, message, inner code."""

    def __init__(self, status: int, code: str, message: str, inner_code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.inner_code = inner_code

    def document(self) -> Json:
        error: Json = {"code": self.code, "message": self.message}
        if self.inner_code:
            error["innererror"] = {"code": self.inner_code}
        return {"error": error}


def _not_found(name: str, version: str = "") -> VaultError:
    ident = f"{name}/{version}" if version else name
    return VaultError(
        404,
        "SecretNotFound",
        f"A secret with (name/id) {ident} was not found in this key vault. If you recently deleted "
        "this secret you may be able to recover it using the correct recovery command.",
    )


def validate_name(name: str) -> None:
    if not NAME_PATTERN.match(name):
        raise VaultError(
            400,
            "BadParameter",
            "The request URI contains an invalid name: "
            f"{name[:130]!r}. Secret names are 1-127 letters, digits and dashes.",
        )


@dataclass
class SecretVersion:
    version: str
    value: str
    content_type: str | None
    tags: dict[str, str] | None
    enabled: bool
    nbf: int | None
    exp: int | None
    created: int
    updated: int

    def to_json(self) -> Json:
        return {
            "version": self.version,
            "value": self.value,
            "contentType": self.content_type,
            "tags": self.tags,
            "enabled": self.enabled,
            "nbf": self.nbf,
            "exp": self.exp,
            "created": self.created,
            "updated": self.updated,
        }

    @classmethod
    def from_json(cls, data: Json) -> SecretVersion:
        return cls(
            version=data["version"],
            value=data["value"],
            content_type=data.get("contentType"),
            tags=data.get("tags"),
            enabled=bool(data.get("enabled", True)),
            nbf=data.get("nbf"),
            exp=data.get("exp"),
            created=int(data["created"]),
            updated=int(data["updated"]),
        )


@dataclass
class Secret:
    name: str  # as first written; lookups are case-insensitive
    versions: list[SecretVersion] = field(default_factory=list)
    deleted_date: int | None = None
    scheduled_purge_date: int | None = None

    @property
    def deleted(self) -> bool:
        return self.deleted_date is not None

    @property
    def latest(self) -> SecretVersion:
        return self.versions[-1]

    def find(self, version: str) -> SecretVersion | None:
        for candidate in self.versions:
            if candidate.version == version.lower():
                return candidate
        return None

    def to_json(self) -> Json:
        return {
            "name": self.name,
            "versions": [v.to_json() for v in self.versions],
            "deletedDate": self.deleted_date,
            "scheduledPurgeDate": self.scheduled_purge_date,
        }

    @classmethod
    def from_json(cls, data: Json) -> Secret:
        return cls(
            name=data["name"],
            versions=[SecretVersion.from_json(v) for v in data["versions"]],
            deleted_date=data.get("deletedDate"),
            scheduled_purge_date=data.get("scheduledPurgeDate"),
        )


def _optional_int(attributes: Json, key: str) -> int | None:
    value = attributes.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise VaultError(400, "BadParameter", f"Property attributes.{key} must be a Unix time in seconds.")
    return int(value)


def _content_type(body: Json) -> str | None:
    value = body.get("contentType")
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_CONTENT_TYPE_CHARS:
        raise VaultError(400, "BadParameter", "Property contentType must be a string of at most 255 characters.")
    return value


def _tags(body: Json) -> dict[str, str] | None:
    value = body.get("tags")
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or len(value) > MAX_TAGS
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    ):
        raise VaultError(400, "BadParameter", "Property tags must map at most 15 names to string values.")
    return dict(value)


def _attributes(body: Json) -> Json:
    value = body.get("attributes") or {}
    if not isinstance(value, dict):
        raise VaultError(400, "BadParameter", "Property attributes must be an object.")
    if "enabled" in value and value["enabled"] is not None and not isinstance(value["enabled"], bool):
        raise VaultError(400, "BadParameter", "Property attributes.enabled must be true or false.")
    return value


class SecretVault:
    """Thread-safe secret state with Key Vault's rules; persisted when ``data_file`` is set."""

    def __init__(
        self,
        data_file: Path | None = None,
        *,
        retention_days: int = 90,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 7 <= retention_days <= 90:
            raise ValueError("retention_days must be between 7 and 90, as in Key Vault")
        self.retention_days = retention_days
        self._data_file = data_file
        self._clock = clock
        self._lock = threading.RLock()
        self._secrets: dict[str, Secret] = {}
        if data_file is not None and data_file.exists():
            self._load(data_file)

    # -- persistence ---------------------------------------------------------------------
    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as error:
            raise ValueError(f"{path} is not a Key Vault emulator data file: {error}") from None
        if data.get("format") != DATA_FORMAT:
            raise ValueError(f"{path}: unknown data format {data.get('format')!r}")
        for raw in data.get("secrets", []):
            secret = Secret.from_json(raw)
            self._secrets[secret.name.lower()] = secret

    def _save(self) -> None:
        if self._data_file is None:
            return
        document = {"format": DATA_FORMAT, "secrets": [s.to_json() for s in self._secrets.values()]}
        self._data_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._data_file.with_name(f".{self._data_file.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self._data_file)

    # -- lookups -------------------------------------------------------------------------
    def _now(self) -> int:
        return int(self._clock())

    def _purge_expired(self) -> bool:
        now = self._now()
        expired = [
            key
            for key, secret in self._secrets.items()
            if secret.scheduled_purge_date is not None and secret.scheduled_purge_date <= now
        ]
        for key in expired:
            del self._secrets[key]
        return bool(expired)

    def _live(self, name: str) -> Secret:
        validate_name(name)
        secret = self._secrets.get(name.lower())
        if secret is None or secret.deleted:
            raise _not_found(name)
        return secret

    def _deleted(self, name: str) -> Secret:
        validate_name(name)
        secret = self._secrets.get(name.lower())
        if secret is None or not secret.deleted:
            raise VaultError(404, "SecretNotFound", f"Deleted Secret not found: {name}")
        return secret

    def _maintain(self) -> None:
        if self._purge_expired():
            self._save()

    # -- operations (each returns copies: callers never hold live state) -----------------
    def set(self, name: str, body: Json) -> tuple[Secret, SecretVersion]:
        validate_name(name)
        value = body.get("value")
        if not isinstance(value, str):
            raise VaultError(400, "BadParameter", "Property value is required and must be a string.")
        if len(value.encode("utf-8")) > MAX_VALUE_BYTES:
            raise VaultError(
                400,
                "BadParameter",
                f"Secret is beyond the maximum permitted length of {MAX_VALUE_BYTES} characters.",
            )
        content_type, tags, attributes = _content_type(body), _tags(body), _attributes(body)
        nbf, exp = _optional_int(attributes, "nbf"), _optional_int(attributes, "exp")
        with self._lock:
            self._purge_expired()
            secret = self._secrets.get(name.lower())
            if secret is not None and secret.deleted:
                raise VaultError(
                    409,
                    "Conflict",
                    f"Secret {secret.name} is currently in a deleted but recoverable state, and its name "
                    "cannot be reused; in this state, the secret can only be recovered or purged.",
                    "ObjectIsDeletedButRecoverable",
                )
            if secret is None:
                secret = Secret(name=name)
                self._secrets[name.lower()] = secret
            now = self._now()
            enabled = attributes.get("enabled")
            version = SecretVersion(
                version=uuid.uuid4().hex,
                value=value,
                content_type=content_type,
                tags=tags,
                enabled=True if enabled is None else enabled,
                nbf=nbf,
                exp=exp,
                created=now,
                updated=now,
            )
            secret.versions.append(version)
            self._save()
            return copy.deepcopy(secret), copy.deepcopy(version)

    def get(self, name: str, version: str = "") -> tuple[Secret, SecretVersion]:
        with self._lock:
            self._maintain()
            secret = self._live(name)
            found = secret.find(version) if version else secret.latest
            if found is None:
                raise _not_found(name, version)
            return copy.deepcopy(secret), copy.deepcopy(found)

    def update(self, name: str, version: str, body: Json) -> tuple[Secret, SecretVersion]:
        content_type, tags, attributes = _content_type(body), _tags(body), _attributes(body)
        nbf, exp = _optional_int(attributes, "nbf"), _optional_int(attributes, "exp")
        with self._lock:
            self._maintain()
            secret = self._live(name)
            found = secret.find(version) if version else secret.latest
            if found is None:
                raise _not_found(name, version)
            if "contentType" in body:
                found.content_type = content_type
            if "tags" in body:
                found.tags = tags
            if attributes.get("enabled") is not None:
                found.enabled = attributes["enabled"]
            if "nbf" in attributes:
                found.nbf = nbf
            if "exp" in attributes:
                found.exp = exp
            found.updated = self._now()
            self._save()
            return copy.deepcopy(secret), copy.deepcopy(found)

    def list_secrets(self) -> list[tuple[Secret, SecretVersion]]:
        with self._lock:
            self._maintain()
            return [
                (copy.deepcopy(s), copy.deepcopy(s.latest))
                for key, s in sorted(self._secrets.items())
                if not s.deleted
            ]

    def list_versions(self, name: str) -> list[tuple[Secret, SecretVersion]]:
        with self._lock:
            self._maintain()
            secret = self._live(name)
            return [(copy.deepcopy(secret), copy.deepcopy(v)) for v in secret.versions]

    def delete(self, name: str) -> Secret:
        with self._lock:
            self._maintain()
            secret = self._live(name)
            now = self._now()
            secret.deleted_date = now
            secret.scheduled_purge_date = now + self.retention_days * 86400
            self._save()
            return copy.deepcopy(secret)

    def get_deleted(self, name: str) -> Secret:
        with self._lock:
            self._maintain()
            return copy.deepcopy(self._deleted(name))

    def list_deleted(self) -> list[Secret]:
        with self._lock:
            self._maintain()
            return [copy.deepcopy(s) for _, s in sorted(self._secrets.items()) if s.deleted]

    def purge(self, name: str) -> None:
        with self._lock:
            self._maintain()
            secret = self._deleted(name)
            del self._secrets[secret.name.lower()]
            self._save()

    def recover(self, name: str) -> tuple[Secret, SecretVersion]:
        with self._lock:
            self._maintain()
            secret = self._deleted(name)
            secret.deleted_date = None
            secret.scheduled_purge_date = None
            self._save()
            return copy.deepcopy(secret), copy.deepcopy(secret.latest)
