"""Route templates of HTTP triggers, matched the way ASP.NET Core routing matches them.

A template is a ``/``-separated list of segments; a segment is literal text and
``{name}`` parameters: ``{id}``, optional ``{id?}``, a default ``{id=7}``, catch-all
``{*rest}`` (last segment only), and constraints ``{id:int}``, ``{id:int:min(1)}``,
``{slug:regex(^[a-z]+$)}``. Literals match case-insensitively and parameter values are
URL-decoded, as in the host. When several routes match, the most specific wins: literal
segments before constrained parameters before plain, optional and catch-all ones.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote

_PARAMETER = re.compile(r"\{([^{}]*(?:\([^)]*\))?[^{}]*)\}")

# Constraints that restrict the text a parameter matches.
_CONSTRAINT_PATTERNS = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "bool": r"(?i:true|false)",
    "guid": r"\{?[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}\}?",
    "alpha": r"[A-Za-z]+",
    "decimal": r"-?\d+(?:\.\d+)?",
    "double": r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?",
    "float": r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?",
    "datetime": r"[0-9T:.\-+Z ]+",
}


class InvalidRoute(ValueError):
    """A route template the host would refuse."""


def _check(name: str, argument: str | None) -> Callable[[str], bool]:
    """A predicate for one constraint (raises InvalidRoute for unknown ones)."""
    if name in _CONSTRAINT_PATTERNS and argument is None:
        pattern = re.compile(_CONSTRAINT_PATTERNS[name])
        if name == "guid":
            return lambda value: _is_guid(value)
        return lambda value: pattern.fullmatch(value) is not None
    if name == "regex" and argument is not None:
        expression = re.compile(argument)
        return lambda value: expression.search(value) is not None
    if name in {"min", "max", "range", "minlength", "maxlength", "length"} and argument is not None:
        bounds = [int(part) for part in argument.split(",")]
        if name in {"min", "max", "range"}:
            low, high = {"min": (bounds[0], None), "max": (None, bounds[0])}.get(
                name, (bounds[0], bounds[-1]))
            return lambda value: _in_range(value, low, high)
        if name == "length" and len(bounds) == 1:
            bounds = [bounds[0], bounds[0]]
        low_len, high_len = {"minlength": (bounds[0], None), "maxlength": (None, bounds[0])}.get(
            name, (bounds[0], bounds[-1]))
        return lambda value: _in_range(str(len(value)), low_len, high_len)
    raise InvalidRoute(f"unknown route constraint {name!r}")


def _is_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _in_range(value: str, low: int | None, high: int | None) -> bool:
    try:
        number = int(value)
    except ValueError:
        return False
    return (low is None or number >= low) and (high is None or number <= high)


def _split_constraints(text: str) -> list[tuple[str, str | None]]:
    """``int:min(1):regex(a:b)`` -> [("int", None), ("min", "1"), ("regex", "a:b")]."""
    constraints: list[tuple[str, str | None]] = []
    while text:
        match = re.match(r"(\w+)(?:\((.*?)\))?(?::|$)", text)
        if not match:
            raise InvalidRoute(f"bad constraint {text!r}")
        if match.group(2) is not None and match.group(1) == "regex":
            # A regex may itself hold ':' and ')': it runs to the last ')' before the end.
            end = text.rfind(")")
            constraints.append(("regex", text[len("regex("):end]))
            text = text[end + 1:].lstrip(":")
            continue
        constraints.append((match.group(1).lower(), match.group(2)))
        text = text[match.end():]
    return constraints


@dataclass
class _Parameter:
    name: str
    optional: bool
    catch_all: bool
    default: str | None
    checks: list[Callable[[str], bool]] = field(default_factory=list)


@dataclass
class RouteTemplate:
    """A compiled route template (without the route prefix)."""

    template: str
    regex: re.Pattern[str]
    parameters: dict[str, _Parameter]
    specificity: tuple[int, ...]

    @classmethod
    def parse(cls, template: str) -> RouteTemplate:
        text = template.strip().strip("/")
        parameters: dict[str, _Parameter] = {}
        pattern = ""
        specificity: list[int] = []
        segments = text.split("/") if text else []
        for index, segment in enumerate(segments):
            if not segment:
                raise InvalidRoute(f"empty segment in {template!r}")
            pieces = _PARAMETER.split(segment)
            # pieces alternate literal, parameter, literal, ...
            sole = len(pieces) == 3 and not pieces[0] and not pieces[2]
            seg_pattern = ""
            rank = 0
            for position, piece in enumerate(pieces):
                if position % 2 == 0:
                    seg_pattern += re.escape(piece)
                    continue
                parameter = cls._parameter(piece, template)
                if parameter.name.lower() in (name.lower() for name in parameters):
                    raise InvalidRoute(f"parameter {parameter.name!r} repeated in {template!r}")
                if parameter.catch_all and index != len(segments) - 1:
                    raise InvalidRoute(f"catch-all must be the last segment of {template!r}")
                parameters[parameter.name] = parameter
                group = f"p{len(parameters)}"
                body = ".*" if parameter.catch_all else "[^/]+"
                seg_pattern += f"(?P<{group}>{body})"
                rank = max(rank, 4 if parameter.catch_all else 3 if parameter.optional else 1 if parameter.checks else 2)
            specificity.append(rank)
            if sole and (parameters[list(parameters)[-1]].optional or parameters[list(parameters)[-1]].catch_all):
                pattern += f"(?:/{seg_pattern})?"
            else:
                pattern += "/" + seg_pattern
        regex = re.compile("^" + pattern + "/?$", re.IGNORECASE)
        return cls(template, regex, parameters, tuple(specificity))

    @staticmethod
    def _parameter(text: str, template: str) -> _Parameter:
        catch_all = text.startswith("*")
        text = text.lstrip("*")
        default = None
        if "=" in text and "(" not in text.split("=", 1)[0]:
            text, default = text.split("=", 1)
        optional = text.endswith("?")
        text = text.rstrip("?")
        name, _, constraint_text = text.partition(":")
        if not re.fullmatch(r"\w+", name):
            raise InvalidRoute(f"bad parameter name {name!r} in {template!r}")
        checks = [_check(c, arg) for c, arg in _split_constraints(constraint_text)] if constraint_text else []
        return _Parameter(name, optional or default is not None, catch_all, default, checks)

    def match(self, path: str) -> dict[str, str] | None:
        """Route values for a request path relative to the prefix (``/items/7``), or None."""
        found = self.regex.match(path)
        if not found:
            return None
        values: dict[str, str] = {}
        for index, (name, parameter) in enumerate(self.parameters.items(), start=1):
            raw = found.group(f"p{index}")
            if raw is None or raw == "":
                if parameter.default is not None:
                    values[name] = parameter.default
                elif parameter.optional or parameter.catch_all:
                    continue
                else:
                    return None
                continue
            value = unquote(raw)
            if not all(check(value) for check in parameter.checks):
                return None
            values[name] = value
        return values
