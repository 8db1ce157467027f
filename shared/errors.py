"""The connector's one exception hierarchy.

    ConnectorError                      every error the core raises on purpose
    ├── ConfigurationError              a setting is missing or malformed (fails at start)
    ├── InvalidInputError               a caller sent something we cannot accept (-> 4xx)
    │   ├── PayloadTooLargeError        ... because it is too big (-> 413)
    │   ├── InvalidPathError            ... a drive path OneDrive would refuse
    │   ├── SessionInputError           ... a connect session field (``code`` names it)
    │   │   └── SessionTooLargeError    ... a connect session request too big (-> 413)
    │   └── AuthFlowError               unknown, expired or reused OAuth state; an error
    │                                   returned by Microsoft on the callback (-> 400 page)
    ├── NotFoundError                   the account / subscription / secret does not exist
    │   ├── UnknownAccountError         ... the account, named by an API caller
    │   └── UnknownUploadError          ... an upload session (expired, or an id not ours)
    ├── ConflictError                   the item exists and the caller asked not to replace it
    ├── ConcurrencyError                an ETag did not match: somebody else wrote first
    ├── ReauthRequiredError             the account's refresh token is dead (invalid_grant)
    ├── MissingScopeError               the account's grant lacks the scope an action needs
    ├── UpstreamError                   a dependency (Graph, identity, storage) failed
    │   ├── ThrottledError              429/503 with the Retry-After to honour
    │   ├── GraphError                  an OData error from Graph (status, code, message)
    │   │   ├── GraphUnauthorizedError  401: the access token was refused; try once more
    │   │   │                           with a fresh one (shared/retry.py)
    │   │   └── DeltaTokenExpiredError  410 Gone / syncStateNotFound: start a full sync
    │   └── IdentityError               the token endpoint refused us for another reason
    └── PersistenceError                a queue / table write failed for good

HTTP status codes are chosen only in ``functions/`` (one table: ``functions/api_errors.py``); nothing here knows about HTTP
responses. Messages never contain a token, an authorization code, a clientState or a
secret: they are logged and may be shown to operators.
"""

from __future__ import annotations


class ConnectorError(Exception):
    """Base class of every error the connector raises deliberately."""


class ConfigurationError(ConnectorError):
    """A setting is missing or malformed; the message names the setting."""


class InvalidInputError(ConnectorError):
    """Input from a caller (Graph, a browser, an operator) was rejected; says why."""


class PayloadTooLargeError(InvalidInputError):
    """The request body is over the accepted size."""


class SessionInputError(InvalidInputError):
    """A connect session request (or an ``ownerId``) the connector cannot accept; ``code``
    names the problem, for the answer's body."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class SessionTooLargeError(SessionInputError, PayloadTooLargeError):
    """A connect session request over its size limit."""


class InvalidPathError(InvalidInputError):
    """A drive path that breaks OneDrive's naming rules."""


class AuthFlowError(InvalidInputError):
    """The OAuth callback cannot complete: bad state, or Microsoft returned an error."""

    def __init__(self, message: str, *, error: str = "invalid_request", description: str = "") -> None:
        super().__init__(message)
        self.error = error
        self.description = description


class NotFoundError(ConnectorError):
    """The thing asked for does not exist."""


class UnknownAccountError(NotFoundError):
    """No account has the id a caller gave."""


class UnknownUploadError(NotFoundError):
    """No upload session has the id a caller gave: not one the files API gave for this
    account, or one Graph has let expire or that was cancelled."""


class ConflictError(ConnectorError):
    """The name is taken and the caller asked to fail rather than replace or rename."""


class ConcurrencyError(ConnectorError):
    """An optimistic-concurrency write lost: the entity changed since it was read."""


class ReauthRequiredError(ConnectorError):
    """The account must sign in again (refresh token revoked or expired)."""

    def __init__(self, account_id: str, reason: str = "invalid_grant") -> None:
        super().__init__(f"account {account_id} must sign in again ({reason})")
        self.account_id = account_id
        self.reason = reason


class MissingScopeError(ConnectorError):
    """The account's grant lacks a scope an operation needs; ``needed`` names the scopes,
    any one of which would do (Mail.ReadWrite to act on mail; a Files scope for the drive)."""

    def __init__(self, account_id: str, needed: str | tuple[str, ...]) -> None:
        self.needed = (needed,) if isinstance(needed, str) else tuple(needed)
        super().__init__(f"account {account_id} has not granted {self.scope}")
        self.account_id = account_id

    @property
    def scope(self) -> str:
        return " or ".join(self.needed)


class UpstreamError(ConnectorError):
    """A dependency failed; ``transient`` says whether a retry may help."""

    transient: bool = True


class ThrottledError(UpstreamError):
    """The dependency asked us to slow down for ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class GraphError(UpstreamError):
    """Graph answered with an OData error."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"Graph {status} {code}: {message}")
        self.status = status
        self.code = code
        self.transient = status >= 500 or status in (408, 429)


class GraphUnauthorizedError(GraphError):
    """Graph refused the access token (401: expired early, revoked). Graph did not run the
    request, so it may be sent again with a fresh token (``shared.retry.with_fresh_token``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(401, code, message)


class DeltaTokenExpiredError(GraphError):
    """The stored deltaLink is no longer valid; a full sync must start again."""


class IdentityError(UpstreamError):
    """The identity platform refused a token request (other than invalid_grant)."""

    def __init__(self, error: str, description: str = "") -> None:
        super().__init__(f"identity platform error {error}")
        self.error = error
        self.description = description


class PersistenceError(ConnectorError):
    """A write to storage failed and the data could not be kept."""
