"""Conditions (a rule's ``when``): paths into an event, operators, and their reference semantics.

Keys are dotted paths into the event as :meth:`Event.as_dict` shows it: ``type``, ``id``,
``source``, ``time``, ``subject``, ``routing_key``, ``data.x.y``, ``headers.x``; a numeric
segment indexes a list (``data.items.0.sku``). An absent ``subject`` or ``routing_key`` counts
as missing. Every condition must hold, and every operator of a condition must hold.

- A missing path fails every operator except ``exists: false``, which holds only for it.
  A present ``null`` is not missing.
- ``eq``/``ne``/``in``/``not_in`` compare JSON values strictly: booleans are not numbers
  (``true != 1``), ``1 == 1.0``, lists and objects compare element by element.
- ``lt``/``lte``/``gt``/``gte`` compare two numbers, two strings (by code point) or two
  timestamps; any other pairing is simply false, never an error.
- ``regex`` is a search on strings only (a non-string is false), by RE2
  (:mod:`router.support.linear_regex`): time linear in the text, whatever the pattern and the
  data; a pattern RE2 cannot take (backreferences, lookaround) is a configuration error. The
  pattern is compiled once, when the index is built.
- ``contains``: substring for a string, strict membership for a list, key for an object.
- YAML timestamps (``2024-05-01`` unquoted) become timestamps, comparable with ``time``; a date
  is midnight UTC and a timestamp without offset is UTC.

What is here is the plain, reference form; :mod:`.codegen` compiles the same semantics to
Python for the hot path, and falls back to :func:`holds` when a value surprises it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from operator import attrgetter
from typing import Any, Final

from router.config.models import OPERATORS
from router.core.events import Event
from router.core.kinds import kind_of
from router.core.suggest import closest
from router.matching.paths import MISSING, Getter, compile_path, lookup, split_path
from router.support.linear_regex import compile_linear, regex_problem

ROOTS: Final = ("type", "id", "source", "time", "subject", "data", "routing_key", "headers")
"""The first segment of every ``when`` path."""

_OPTIONAL_ROOTS: Final = frozenset({"subject", "routing_key"})  # None means absent


# -- values and operators ---------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    kind = type(value)
    return kind is int or kind is float


def strict_eq(a: Any, b: Any) -> bool:
    """JSON equality: booleans are not numbers, ``1 == 1.0``, containers compare deeply."""
    kind = type(a)
    if kind is type(b):
        if kind is list:
            return len(a) == len(b) and all(strict_eq(x, y) for x, y in zip(a, b, strict=True))
        if kind is dict:
            return a.keys() == b.keys() and all(strict_eq(v, b[k]) for k, v in a.items())
        return bool(a == b)
    if kind is bool or type(b) is bool:
        return False
    return bool(a == b)


SYMBOLS: Final = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">="}

BOOL_TAG: Final = object()


def hash_key(value: Any) -> Any:
    """A hashable stand-in for ``value`` under :func:`strict_eq` (raises TypeError for containers)."""
    if type(value) is bool:
        return (BOOL_TAG, value)  # keeps True apart from 1 in sets and dicts
    if type(value) is list or type(value) is dict:
        raise TypeError("unhashable")
    return value


def keyable(value: Any) -> bool:
    return value is None or type(value) in (str, int, float, bool)


def comparable(a: Any, b: Any) -> bool:
    if _is_number(a):
        return _is_number(b)
    if type(a) is str:
        return type(b) is str
    if isinstance(a, datetime) and isinstance(b, datetime):
        return (a.tzinfo is None) == (b.tzinfo is None)
    return False


def _contains(actual: Any, expected: Any) -> bool:
    kind = type(actual)
    if kind is str:
        return type(expected) is str and expected in actual
    if kind is list:
        return any(strict_eq(item, expected) for item in actual)
    if kind is dict:
        return type(expected) is str and expected in actual
    return False


def holds(operator: str, expected: Any, actual: Any) -> bool:
    """The reference semantics of one operator on a present value (``expected`` prepared)."""
    if operator == "eq":
        return strict_eq(actual, expected)
    if operator == "ne":
        return not strict_eq(actual, expected)
    if operator in ("lt", "lte", "gt", "gte"):
        if not comparable(actual, expected):
            return False
        if operator == "lt":
            return bool(actual < expected)
        if operator == "lte":
            return bool(actual <= expected)
        if operator == "gt":
            return bool(actual > expected)
        return bool(actual >= expected)
    if operator == "in":
        return any(strict_eq(actual, item) for item in expected)
    if operator == "not_in":
        return not any(strict_eq(actual, item) for item in expected)
    if operator == "regex":
        return type(actual) is str and expected.search(actual) is not None
    if operator == "contains":
        return _contains(actual, expected)
    if operator == "exists":
        return bool(expected)
    raise ValueError(f"unknown operator '{operator}'")


def prepare(operator: str, operand: Any) -> Any:
    """The operand as operators use it: timestamps in UTC, regexes compiled."""
    if operator == "regex":
        return compile_linear(operand)
    if operator in ("in", "not_in"):
        return [prepare_value(item) for item in operand]
    return prepare_value(operand)


def prepare_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    return value


# -- paths into events ------------------------------------------------------------------------


def path_error(path: str) -> str | None:
    """None if ``path`` can address an event, else a message saying what is wrong."""
    try:
        segments = split_path(path)
    except ValueError as exc:
        return str(exc)
    if segments[0] not in ROOTS:
        # Either the root is misspelt, or the author meant a field of the data.
        guesses = [f"data.{path}"]
        root = closest(segments[0], ROOTS)
        if root:
            guesses.insert(0, ".".join([root, *segments[1:]]))
        hint = " or ".join(f"'{guess}'" for guess in guesses)
        return f"path '{path}' must start with one of {', '.join(ROOTS)}; did you mean {hint}?"
    return None


def event_getter(path: str) -> Getter:
    """A compiled getter of ``path`` on an :class:`Event` (returns MISSING when absent)."""
    root, _, rest = path.partition(".")
    if root not in ROOTS:
        return lambda event: MISSING
    attribute = attrgetter(root)
    if not rest:
        if root in _OPTIONAL_ROOTS:
            return lambda event: MISSING if (value := attribute(event)) is None else value
        return attribute
    inner = compile_path(rest)
    if root == "data":
        if "." not in rest:  # the common case: one dict lookup, no further call

            def get_field(event: Event) -> Any:
                data = event.data
                return data.get(rest, MISSING) if type(data) is dict else inner(data)

            return get_field
        return lambda event: inner(event.data)
    return lambda event: inner(attribute(event))


def event_value(event: Event, path: str) -> Any:
    """The value at ``path`` in ``event``, or MISSING (the plain form of :func:`event_getter`)."""
    root, _, rest = path.partition(".")
    if root not in ROOTS:
        return MISSING
    value = event.as_dict()[root]
    if not rest:
        return MISSING if value is None and root in _OPTIONAL_ROOTS else value
    return lookup(value, rest)


# -- validation -------------------------------------------------------------------------------


def condition_error(path: str, operator: str, operand: Any) -> str | None:
    """None if ``operator: operand`` is usable under ``path``, else a message."""
    where = f"'{path}': {operator}"
    if operator not in OPERATORS:
        return f"'{path}': unknown operator '{operator}' (operators: {', '.join(OPERATORS)})"
    if operator in ("lt", "lte", "gt", "gte"):
        if not (_is_number(operand) or isinstance(operand, (str, date))):
            return f"{where} needs a number, a string or a timestamp, got {kind_of(operand)}"
    elif operator in ("in", "not_in"):
        if not isinstance(operand, list):
            return f"{where} needs a list of values, got {kind_of(operand)}"
    elif operator == "regex":
        if not isinstance(operand, str):
            return f"{where} needs a regular expression string, got {kind_of(operand)}"
        problem = regex_problem(operand)
        if problem is not None:
            return f"{where}: {problem}"
    elif operator == "exists" and not isinstance(operand, bool):
        return f"{where} needs true or false, got {kind_of(operand)}"
    if path.split(".")[0] == "data" and _holds_timestamp(operand):
        return (
            f"{where}: YAML read an unquoted date or time as a timestamp, but event data holds strings; "
            "quote it to compare text"
        )
    return None


def _holds_timestamp(operand: Any) -> bool:
    if isinstance(operand, list):
        return any(isinstance(item, date) for item in operand)
    return isinstance(operand, date)


# -- one condition, ready to evaluate ----------------------------------------------------------


@dataclass(slots=True)
class Condition:
    path: str
    operator: str
    operand: Any  # as written in the config
    prepared: Any  # as operators use it
    getter: Getter


def make_condition(path: str, operator: str, operand: Any) -> Condition:
    return Condition(path, operator, operand, prepare(operator, operand), event_getter(path))


def holds_on(condition: Condition, event: Event) -> bool:
    """The reference evaluation of one condition on an event."""
    actual = condition.getter(event)
    if condition.operator == "exists":
        return (actual is not MISSING) is condition.prepared
    return actual is not MISSING and holds(condition.operator, condition.prepared, actual)
