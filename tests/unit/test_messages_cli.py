"""``python -m shared.cli messages ...`` over the fake Graph mailbox."""

from __future__ import annotations

import io
import json
from typing import Any

from shared.cli import main
from tests.unit.test_mail_actions import ACCOUNT, services_with


def run(services: Any, *argv: str) -> tuple[int, Any, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["messages", *argv], services=services, out=out, err=err)
    return code, json.loads(out.getvalue()) if out.getvalue() else None, err.getvalue()


def test_list_show_move_and_delete_from_the_command_line() -> None:
    services = services_with()
    ids = [services.graph.add_message(ACCOUNT, f"mail {n}")["id"] for n in range(3)]
    code, listed, _ = run(services, "list", ACCOUNT, "--top", "2", "--all")
    assert code == 0 and sorted(m["id"] for m in listed["messages"]) == sorted(ids)
    code, shown, _ = run(services, "show", ACCOUNT, ids[0], "--body-type", "text")
    assert code == 0 and shown["body"]["contentType"] == "text"
    code, moved, _ = run(services, "move", ACCOUNT, ids[0], "archive")
    assert code == 0 and moved["id"] == ids[0] and moved["folder"] == "archive"
    code, _, _ = run(services, "delete", ACCOUNT, ids[1], "--permanent")
    assert code == 0 and ids[1] not in services.graph.box(ACCOUNT).messages


def test_an_unknown_message_or_a_missing_scope_exits_1_with_the_reason() -> None:
    services = services_with()
    code, _, err = run(services, "show", ACCOUNT, "AAkALg-nope")
    assert code == 1 and "not found" in err
    read_only = services_with(scopes=("Mail.Read",))
    sent = read_only.graph.add_message(ACCOUNT, "x")
    code, _, err = run(read_only, "move", ACCOUNT, sent["id"], "archive")
    assert code == 1 and "Mail.ReadWrite" in err
