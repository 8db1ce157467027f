"""The devhost's own Queue Storage client (devstack/devhost/queue_rest.py), against a real Azurite,
side by side with the SDK that consumers use."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.storage.queue import QueueClient

from devstack.devhost.queue_rest import ConnectionPool, QueueRestClient, account_of
from tests.support.azurite import Azurite

pytestmark = pytest.mark.integration


@pytest.fixture
def pool() -> Iterator[ConnectionPool]:
    shared = ConnectionPool(size=4)
    yield shared
    shared.close()


def lean(azurite: Azurite, pool: ConnectionPool, name: str | None = None) -> QueueRestClient:
    account = account_of(azurite.connection_string)
    assert account is not None
    client = QueueRestClient(account, name or f"lean-{uuid.uuid4().hex[:12]}", pool)
    client.create_queue()
    return client


def test_a_message_sent_here_is_read_by_the_sdk_and_one_sent_by_the_sdk_here(
    azurite: Azurite, pool: ConnectionPool
) -> None:
    client = lean(azurite, pool)
    sdk = QueueClient.from_connection_string(azurite.connection_string, client.queue_name)
    text = "<b>&amp; 'quotes' \"and\" ünïcode</b>"

    client.send_message(text)
    [seen] = list(sdk.receive_messages(max_messages=1))
    sdk.delete_message(seen)
    sdk.send_message(text)
    [received] = client.receive_messages(messages_per_page=32, visibility_timeout=30)

    assert seen.content == text
    assert received.content == text
    assert received.dequeue_count == 1 and received.pop_receipt and received.id
    assert received.inserted_on is not None and received.next_visible_on is not None
    assert received.next_visible_on > received.inserted_on


def test_receive_takes_at_most_the_asked_number_and_hides_them(azurite: Azurite, pool: ConnectionPool) -> None:
    client = lean(azurite, pool)
    for n in range(40):
        client.send_message(f"m{n}")

    first = client.receive_messages(messages_per_page=32, max_messages=32, visibility_timeout=60)
    rest = client.receive_messages(messages_per_page=32, visibility_timeout=60)

    assert len(first) == 32 and len(rest) == 8
    assert {m.content for m in first + rest} == {f"m{n}" for n in range(40)}
    assert client.receive_messages(visibility_timeout=60) == []


def test_a_message_made_visible_again_comes_back_with_its_count_and_a_deleted_one_never(
    azurite: Azurite, pool: ConnectionPool
) -> None:
    client = lean(azurite, pool)
    client.send_message("again")
    client.send_message("gone")
    received = {m.content: m for m in client.receive_messages(visibility_timeout=60)}

    client.update_message(received["again"].id, received["again"].pop_receipt, visibility_timeout=0)
    client.delete_message(received["gone"].id, received["gone"].pop_receipt)
    [back] = client.receive_messages(visibility_timeout=60)

    assert (back.content, back.dequeue_count) == ("again", 2)
    with pytest.raises(ResourceNotFoundError):
        client.delete_message(received["gone"].id, received["gone"].pop_receipt)


def test_a_missing_queue_is_not_found_and_creating_an_existing_one_is_fine(
    azurite: Azurite, pool: ConnectionPool
) -> None:
    client = lean(azurite, pool)
    QueueClient.from_connection_string(azurite.connection_string, client.queue_name).delete_queue()

    with pytest.raises(ResourceNotFoundError):
        client.send_message("nowhere")
    client.create_queue()
    client.create_queue()
    client.send_message("somewhere")
    assert [m.content for m in client.receive_messages()] == ["somewhere"]


def test_a_wrong_account_key_is_refused(azurite: Azurite, pool: ConnectionPool) -> None:
    account = account_of(azurite.connection_string)
    assert account is not None
    wrong = account_of(
        azurite.connection_string.replace(base64.b64encode(account.key).decode(), base64.b64encode(b"x" * 64).decode())
    )
    assert wrong is not None

    with pytest.raises(HttpResponseError) as refused:
        QueueRestClient(wrong, "anything", pool).send_message("x")

    assert refused.value.status_code == 403


def test_connections_that_died_in_the_pool_are_replaced(azurite: Azurite, pool: ConnectionPool) -> None:
    client = lean(azurite, pool)
    client.send_message("before")
    for connections in pool._idle.values():  # noqa: SLF001 - the server side closing them, as seen here
        for connection in connections:
            assert connection.sock is not None
            connection.sock.close()

    client.send_message("after")

    assert sorted(m.content for m in client.receive_messages()) == ["after", "before"]


@pytest.mark.parametrize(
    ("connection", "endpoint"),
    [
        ("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.windows.net",
         "https://acct.queue.core.windows.net"),
        ("AccountName=devstoreaccount1;AccountKey=a2V5;QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1/",
         "http://127.0.0.1:10001/devstoreaccount1"),
    ],
)
def test_shared_key_connection_strings_name_their_endpoint(connection: str, endpoint: str) -> None:
    account = account_of(connection)
    assert account is not None
    assert (account.name, account.key, account.endpoint) == (account.name, b"key", endpoint)


@pytest.mark.parametrize(
    "connection",
    [
        "UseDevelopmentStorage=true",
        "QueueEndpoint=https://acct.queue.core.windows.net;SharedAccessSignature=sv=2021&sig=x",
        "AccountName=acct;AccountKey=not base64!",
    ],
)
def test_other_connection_strings_are_left_to_the_sdk(connection: str) -> None:
    assert account_of(connection) is None
