"""Fixtures shared by every test layer.

- ``azurite``: a real Azurite on free ports for the session (integration tests).
- ``stack``: the whole local platform (Azurite, Key Vault emulator, Graph simulator,
  devhost running ``function_app``) on free ports for the session (end-to-end tests).
Both are started here and stopped at the end of the session.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.stack import LocalStack
from tests.support.azurite import Azurite

# Wide enough that the renewal tests find the subscriptions the connect flow just made.
STACK_SETTINGS = {
    "RENEWAL_WINDOW_MINUTES": "20000",
    "CATCHUP_AFTER_MINUTES": "360",
    # Timers fire only when a test asks (POST /admin/functions/{name}), never by surprise.
    "RENEWAL_SCHEDULE": "0 0 0 1 1 *",
    # The mail actions need Mail.ReadWrite; a small attachment limit lets a test cross it.
    "MAIL_ACTIONS_ENABLED": "true",
    "MAX_ATTACHMENT_BYTES": "1048576",
}

# The document tool's stack: a product that asks only for the user's files, no mail.
DOCUMENT_TOOL_SETTINGS = {**STACK_SETTINGS, "GRAPH_SCOPES": "User.Read Files.ReadWrite.All", "MAIL_ACTIONS_ENABLED": "false"}


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    with Azurite.start(tmp_path_factory.mktemp("azurite")) as running:
        yield running


# The origin connect sessions of the tests return to (nothing listens there: the tests read
# the redirect), besides the devhost's own (a real browser follows the redirect there).
PRODUCT_ORIGIN = "https://product.test"


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    data_dir: Path = tmp_path_factory.mktemp("stack")
    local = LocalStack.on_free_ports(data_dir, extra_settings=STACK_SETTINGS)
    local.extra_settings = {**STACK_SETTINGS, "ALLOWED_RETURN_ORIGINS": f"{PRODUCT_ORIGIN},{local.devhost_url}"}
    with local as running:
        yield running
