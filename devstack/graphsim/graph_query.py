"""``$filter`` and ``$orderby`` on message collections, the subset Outlook mail serves.

A filter is clauses joined by ``and``: ``property op literal`` with ``eq ne gt ge lt
le``, on dates (``receivedDateTime ge 2026-11-01T00:00:00Z``), booleans (``isRead eq
false``), strings (``importance eq 'high'``), the paths ``from/emailAddress/address``
and ``flag/flagStatus``, and ``categories/any(c:c eq 'Red')``. Anything else is a 400, as
Graph answers a filter it cannot run. Outlook also refuses an ``$orderby`` on a property
the ``$filter`` does not name (``InefficientFilter``,
https://learn.microsoft.com/graph/api/user-list-messages#using-filter-and-orderby-in-the-same-query).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

from .mailstore import Message
from .state import parse_graph_time

Predicate = Callable[[Message], bool]

DATE_FIELDS = {"receiveddatetime": "receivedDateTime", "sentdatetime": "sentDateTime",
               "createddatetime": "createdDateTime", "lastmodifieddatetime": "lastModifiedDateTime"}
BOOL_FIELDS = {"isread": "isRead", "hasattachments": "hasAttachments", "isdraft": "isDraft"}
STRING_FIELDS = {"importance": "importance", "subject": "subject", "conversationid": "conversationId",
                 "internetmessageid": "internetMessageId", "parentfolderid": "parentFolderId",
                 "inferenceclassification": "inferenceClassification"}
PATH_FIELDS = {"from/emailaddress/address": ("from", "emailAddress", "address"),
               "sender/emailaddress/address": ("sender", "emailAddress", "address"),
               "flag/flagstatus": ("flag", "flagStatus")}
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b, "lt": lambda a, b: a < b, "le": lambda a, b: a <= b,
}
_CLAUSE = re.compile(r"^\s*([A-Za-z/]+)\s+(eq|ne|gt|ge|lt|le)\s+(.+?)\s*$", re.IGNORECASE)
_ANY = re.compile(r"^\s*categories/any\(\s*(\w+)\s*:\s*\1\s+eq\s+'((?:[^']|'')*)'\s*\)\s*$", re.IGNORECASE)
_AND = re.compile(r"\s+and\s+", re.IGNORECASE)


class InvalidQuery(ValueError):
    """A $filter or $orderby the simulated Outlook cannot run."""


def _string(literal: str) -> str:
    if len(literal) < 2 or literal[0] != "'" or literal[-1] != "'":
        raise InvalidQuery(f"Invalid filter clause: {literal} is not a quoted string.")
    return literal[1:-1].replace("''", "'")


def _clause(text: str) -> tuple[str, Predicate]:
    any_match = _ANY.match(text)
    if any_match:
        wanted = any_match.group(2).replace("''", "'")
        return "categories", lambda m: wanted in m.data.get("categories", [])
    match = _CLAUSE.match(text)
    if match is None:
        raise InvalidQuery(f"Invalid filter clause: '{text.strip()}'.")
    name, op, literal = match.group(1).lower(), _OPS[match.group(2).lower()], match.group(3)
    if name in DATE_FIELDS:
        field = DATE_FIELDS[name]
        try:
            bound = parse_graph_time(literal.strip("'"))
        except ValueError as exc:
            raise InvalidQuery(f"Invalid filter clause: '{literal}' is not a DateTimeOffset.") from exc
        return field, lambda m: op(_time(m.data[field]), bound)
    if name in BOOL_FIELDS:
        field = BOOL_FIELDS[name]
        if literal.lower() not in ("true", "false") or op not in (_OPS["eq"], _OPS["ne"]):
            raise InvalidQuery(f"Invalid filter clause: {name} compares with eq or ne to true or false.")
        flag = literal.lower() == "true"
        return field, lambda m: op(bool(m.data.get(field)), flag)
    if name == "parentfolderid":
        folder_id = _string(literal)
        return "parentFolderId", lambda m: op(m.folder_id, folder_id)
    if name in STRING_FIELDS:
        field, value = STRING_FIELDS[name], _string(literal)
        return field, lambda m: op(str(m.data.get(field, "")), value)
    if name in PATH_FIELDS:
        path, value = PATH_FIELDS[name], _string(literal)
        return path[0], lambda m: op(_walk(m.data, path), value)
    raise InvalidQuery(f"Could not find a property named '{match.group(1)}' on type 'microsoft.graph.message'.")


def _time(text: str) -> dt.datetime:
    return parse_graph_time(text)


def _walk(data: dict[str, Any], path: tuple[str, ...]) -> str:
    value: Any = data
    for part in path:
        value = value.get(part) if isinstance(value, dict) else None
    return str(value or "")


def parse_filter(text: str) -> tuple[list[str], Predicate]:
    """The properties a filter names (in order) and the predicate it stands for."""
    if re.search(r"\s+or\s+|^\s*not\s+", text, re.IGNORECASE):
        raise InvalidQuery("The simulator runs $filter clauses joined by 'and' only.")
    clauses = [_clause(part) for part in _AND.split(text) if part.strip()]
    if not clauses:
        raise InvalidQuery("The $filter is empty.")
    names = [name for name, _ in clauses]
    predicates = [predicate for _, predicate in clauses]
    return names, lambda m: all(p(m) for p in predicates)


SORTABLE = {**DATE_FIELDS, **{k: v for k, v in STRING_FIELDS.items() if k != "parentfolderid"},
            **BOOL_FIELDS}


def parse_orderby(text: str) -> list[tuple[str, bool]]:
    """``receivedDateTime desc, subject`` -> ``[("receivedDateTime", True), ("subject", False)]``."""
    order = []
    for part in text.split(","):
        words = part.split()
        if not words or len(words) > 2 or (len(words) == 2 and words[1].lower() not in ("asc", "desc")):
            raise InvalidQuery(f"Invalid $orderby: '{part.strip()}'.")
        field = SORTABLE.get(words[0].lower())
        if field is None:
            raise InvalidQuery(f"Could not find a property named '{words[0]}' on type 'microsoft.graph.message'.")
        order.append((field, len(words) == 2 and words[1].lower() == "desc"))
    return order


def check_filter_and_order(filtered: list[str], order: list[tuple[str, bool]]) -> None:
    missing = [name for name, _ in order if name not in filtered]
    if filtered and missing:
        raise InvalidQuery("The restriction or sort order is too complex for this operation.")


def sort_messages(messages: list[Message], order: list[tuple[str, bool]]) -> None:
    """Sort in place; the default is Outlook's, newest received first.

    Stored times are all in Graph's one form (``2026-11-20T23:10:19Z``), so they sort as strings.
    """
    if not order:
        messages.sort(key=lambda m: (m.data["receivedDateTime"], m.immutable_id), reverse=True)
        return
    messages.sort(key=lambda m: m.immutable_id)
    for field, descending in reversed(order):
        messages.sort(key=lambda m, f=field: _sort_value(m, f), reverse=descending)  # type: ignore[misc]


def _sort_value(message: Message, field: str) -> Any:
    value = message.data.get(field)
    return value if value is not None else ""
