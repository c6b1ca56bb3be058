"""The compiled rule index: which rules an event fires, fast, and why (``explain``).

Patterns (a rule's ``on``)
    Segments separated by ``.`` or ``/`` (Inngest-style types: ``space/completed.planet`` has
    the segments ``space``, ``completed`` and ``planet``). ``*`` matches exactly one segment;
    ``**`` matches any number of segments, including none (RabbitMQ's ``#``): ``a.**`` matches
    ``a``, ``a.b`` and ``a.b.c``; ``challenging/**`` matches ``challenging`` and every
    ``challenging/...`` type; ``**`` alone matches every type. The separator written before a
    wildcard is the one the type must have there: ``a.*`` matches ``a.b``, not ``a/b``, and
    ``a/**`` matches ``a/b.c``, not ``a.b``. Wildcards are whole segments (``a*`` is an error),
    a pattern's segments are never empty. A list of patterns matches if any of them does.

Conditions (a rule's ``when``)
    Keys are dotted paths into the event as :meth:`Event.as_dict` shows it: ``type``, ``id``,
    ``source``, ``time``, ``subject``, ``routing_key``, ``data.x.y``, ``headers.x``; a
    numeric segment indexes a list (``data.items.0.sku``). An absent ``subject`` or
    ``routing_key`` counts as missing. Every condition must hold, and every operator of a
    condition must hold.

    - A missing path fails every operator except ``exists: false``, which holds only for it.
      A present ``null`` is not missing.
    - ``eq``/``ne``/``in``/``not_in`` compare JSON values strictly: booleans are not numbers
      (``true != 1``), ``1 == 1.0``, lists and objects compare element by element.
    - ``lt``/``lte``/``gt``/``gte`` compare two numbers, two strings (by code point) or two
      timestamps; any other pairing is simply false, never an error.
    - ``regex`` is ``re.search`` on strings only (a non-string is false); the pattern is
      compiled once, when the index is built.
    - ``contains``: substring for a string, strict membership for a list, key for an object.
    - YAML timestamps (``2024-05-01`` unquoted) become timestamps, comparable with ``time``;
      a date is midnight UTC and a timestamp without offset is UTC.

Firing
    Rules fire in file order; every matching rule fires until one with ``stop: true``, which
    fires itself and hides the event from every later rule.

How the index is fast
    Exact types live in a dict and wildcard patterns in a segment trie, so the candidate
    rules of a type are found without looking at the others. The candidates of each type are
    cached (bounded) as a plan: when several candidates test the same path with ``eq`` or
    ``in`` (``data.tenant: acme``), that path is read once and a dict lookup yields the
    candidates whose test it satisfies. Once a type recurs, its plan is compiled into one
    generated Python function that tests the other candidates inline. The cost of a match
    thus follows the rules that could fire for the event, not the size of rules.yaml.
    :func:`naive_match` is the plain scan the index must agree with (a property test checks
    that it does, on generated rules and events).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from operator import attrgetter, itemgetter
from typing import Any, Final

from router.config.models import OPERATORS, Rule
from router.core.errors import ConfigError, Problem
from router.core.events import Event
from router.core.kinds import kind_of
from router.core.suggest import closest
from router.matching.paths import MISSING, Getter, compile_path, lookup, split_path

ROOTS: Final = ("type", "id", "source", "time", "subject", "data", "routing_key", "headers")
"""The first segment of every ``when`` path."""

_OPTIONAL_ROOTS: Final = frozenset({"subject", "routing_key"})  # None means absent

DEFAULT_CACHE_SIZE: Final = 4096
"""Event types whose candidate plan a :class:`RuleIndex` keeps."""

Check = Callable[[Event], bool]

# A literal segment: the characters an event type may hold (see router.core.events), less the separators.
_LITERAL_RE = re.compile(r"[^\s./*#\x00-\x1f\x7f]+")
# '.' and '/' both end a segment; the separator is kept with the segment it precedes.
_SEPARATOR_RE = re.compile(r"([./])")


# -- patterns --------------------------------------------------------------------------------


def pattern_error(pattern: str) -> str | None:
    """None if ``pattern`` is a valid ``on`` pattern, else a message saying what is wrong."""
    if not isinstance(pattern, str):
        return f"a pattern must be a string, got {type(pattern).__name__}"
    if not pattern:
        return "a pattern cannot be empty (use '**' to match every event type)"
    for segment in _SEPARATOR_RE.split(pattern)[::2]:
        if not segment:
            return (
                f"pattern '{pattern}' has an empty segment"
                " (two separators ('.' or '/') in a row, or a leading or trailing one)"
            )
        if segment in ("*", "**"):
            continue
        if segment == "#":
            return f"pattern '{pattern}': '#' is RabbitMQ syntax; write '**' for any number of segments"
        if "*" in segment:
            return f"pattern '{pattern}': '*' and '**' must be whole segments, not part of '{segment}'"
        if _LITERAL_RE.fullmatch(segment) is None:
            return f"pattern '{pattern}': segment '{segment}' contains whitespace, '#' or a control character"
    return None


def tokens(text: str) -> list[str]:
    """``text`` as segments, each with the separator before it (``"."`` for the first).

    ``"space/completed.planet"`` -> ``[".space", "/completed", ".planet"]``: a wildcard token
    such as ``"/**"`` matches only where the type has that separator.
    """
    parts = _SEPARATOR_RE.split(text)
    return ["." + parts[0], *(parts[i] + parts[i + 1] for i in range(1, len(parts), 2))]


def is_wildcard(pattern: str) -> bool:
    """Whether ``pattern`` has a ``*`` or ``**`` segment (else it names one exact type)."""
    return any(token[1:] in ("*", "**") for token in tokens(pattern))


def pattern_matches(pattern: str, event_type: str) -> bool:
    """Whether ``event_type`` matches ``pattern`` (the reference semantics; slow but plain)."""
    return _glob(_segments(pattern), tokens(event_type))


def _segments(pattern: str) -> list[str]:
    # '**.**' means what '.**' means; collapsing them keeps backtracking from compounding.
    segments: list[str] = []
    for segment in tokens(pattern):
        if not (segment[1:] == "**" and segments and segments[-1] == segment):
            segments.append(segment)
    return segments


def _glob(pattern: list[str], segments: list[str]) -> bool:
    if not pattern:
        return not segments
    head, rest = pattern[0], pattern[1:]
    separator, text = head[0], head[1:]
    if text == "**":
        # None, or a first segment after this separator and then any segments at all.
        if _glob(rest, segments):
            return True
        if not segments or segments[0][0] != separator:
            return False
        return any(_glob(rest, segments[i:]) for i in range(1, len(segments) + 1))
    if not segments:
        return False
    matched = segments[0][0] == separator if text == "*" else head == segments[0]
    return matched and _glob(rest, segments[1:])


def compile_pattern(pattern: str) -> Callable[[str], bool]:
    """``pattern`` as a predicate on event types, via one regex (for scans; the index uses a trie)."""
    # Every segment is matched with its separator in front, against "." + type, so that '**'
    # can stand for zero segments without leaving a dangling separator behind.
    parts = []
    for segment in _segments(pattern):
        separator, text = re.escape(segment[0]), segment[1:]
        if text == "**":
            parts.append(rf"(?:{separator}[^./]*(?:[./][^./]*)*)?")
        elif text == "*":
            parts.append(rf"{separator}[^./]*")
        else:
            parts.append(re.escape(segment))
    fullmatch = re.compile("".join(parts)).fullmatch
    return lambda event_type: fullmatch("." + event_type) is not None


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


_SYMBOLS: Final = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">="}

_BOOL_TAG: Final = object()


def _key(value: Any) -> Any:
    """A hashable stand-in for ``value`` under :func:`strict_eq` (raises TypeError for containers)."""
    if type(value) is bool:
        return (_BOOL_TAG, value)  # keeps True apart from 1 in sets and dicts
    if type(value) is list or type(value) is dict:
        raise TypeError("unhashable")
    return value


def _keyable(value: Any) -> bool:
    return value is None or type(value) in (str, int, float, bool)


def _comparable(a: Any, b: Any) -> bool:
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


def _holds(operator: str, expected: Any, actual: Any) -> bool:
    """The reference semantics of one operator on a present value (``expected`` prepared)."""
    if operator == "eq":
        return strict_eq(actual, expected)
    if operator == "ne":
        return not strict_eq(actual, expected)
    if operator in ("lt", "lte", "gt", "gte"):
        if not _comparable(actual, expected):
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


def _prepare(operator: str, operand: Any) -> Any:
    """The operand as operators use it: timestamps in UTC, regexes compiled."""
    if operator == "regex":
        return re.compile(operand)
    if operator in ("in", "not_in"):
        return [_prepare_value(item) for item in operand]
    return _prepare_value(operand)


def _prepare_value(value: Any) -> Any:
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
            return f"{where} needs a number, a string or a timestamp, got {_kind(operand)}"
    elif operator in ("in", "not_in"):
        if not isinstance(operand, list):
            return f"{where} needs a list of values, got {_kind(operand)}"
    elif operator == "regex":
        if not isinstance(operand, str):
            return f"{where} needs a regular expression string, got {_kind(operand)}"
        try:
            re.compile(operand)
        except re.error as exc:
            return f"{where}: invalid regular expression: {exc}"
    elif operator == "exists" and not isinstance(operand, bool):
        return f"{where} needs true or false, got {_kind(operand)}"
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


def rule_problems(rules: Sequence[Rule]) -> list[Problem]:
    """Every problem in the ``on`` patterns and ``when`` conditions of ``rules`` (empty if none)."""
    problems: list[Problem] = []
    for i, rule in enumerate(rules):
        if not rule.on:
            problems.append(Problem("'on' needs at least one event type pattern", path=f"rules[{i}].on"))
        for j, pattern in enumerate(rule.on):
            message = pattern_error(pattern)
            if message:
                where = f"rules[{i}].on" if len(rule.on) == 1 else f"rules[{i}].on[{j}]"
                problems.append(Problem(message, path=where))
        for path, condition in rule.when.items():
            message = path_error(path)
            if message:
                problems.append(Problem(message, path=f"rules[{i}].when"))
                continue
            for operator, operand in condition.items():
                message = condition_error(path, operator, operand)
                if message:
                    problems.append(Problem(message, path=f"rules[{i}].when"))
    return problems


def _kind(value: Any) -> str:
    return kind_of(value)


# -- compiled rules -------------------------------------------------------------------------


@dataclass(slots=True)
class _Condition:
    path: str
    operator: str
    operand: Any  # as written in the config
    prepared: Any  # as operators use it
    getter: Getter


def _condition(path: str, operator: str, operand: Any) -> _Condition:
    return _Condition(path, operator, operand, _prepare(operator, operand), event_getter(path))


def _holds_on(condition: _Condition, event: Event) -> bool:
    """The reference evaluation of one condition on an event."""
    actual = condition.getter(event)
    if condition.operator == "exists":
        return (actual is not MISSING) is condition.prepared
    return actual is not MISSING and _holds(condition.operator, condition.prepared, actual)


# Conditions are compiled to Python source because on the hot path the cost is in calls: a
# closure per operator and per path costs several calls per condition, generated code none.
# Rule checks are one function per rule; a plan's residual candidates become one function
# testing them all inline. Values only enter the source as names of a factory's arguments
# (b7, b8...), never as text, so no config string becomes code. Sources of the same shape
# (say, one string eq on data.tenant) are compiled once; values live in closure cells rather
# than per-rule globals, which would defeat the interpreter's inline caches on shared code.


class _Builder:
    """Writes one generated function: its body lines, and the values its names are bound to."""

    def __init__(self, reference: Callable[[Event], Any]) -> None:
        # ``reference`` is the slow path, taken when a value of an unexpected Python type (an
        # event built in code rather than decoded) trips the generated code: same answers.
        self.bindings: dict[str, Any] = {
            "MISSING": MISSING,
            "BOOL": _BOOL_TAG,
            "strict_eq": strict_eq,
            "holds": _holds,
            "reference": reference,
        }
        self.lines: list[str] = []
        self.values: dict[str, tuple[str, str]] = {}  # path -> (value local, type local)
        self.shared: dict[tuple[Any, ...], str] = {}  # test key -> boolean local
        self.uses_data = False

    def bind(self, value: Any) -> str:
        name = f"b{len(self.bindings)}"
        self.bindings[name] = value
        return name

    def value(self, condition: _Condition) -> tuple[str, str]:
        """Locals holding the value at the condition's path and its type, loaded on first use."""
        if condition.path in self.values:
            return self.values[condition.path]
        n = len(self.values)
        v, t = self.values[condition.path] = (f"v{n}", f"t{n}")
        root, *segments = condition.path.split(".")
        if root != "data" or not segments or any(segment.isdigit() for segment in segments):
            self.lines.append(f"{v} = {self.bind(condition.getter)}(event)")
        else:
            # Paths into the data, inlined as dict lookups; anything but a dict half-way (a
            # list, another mapping) falls back to the path's getter, which knows them all.
            self.uses_data = True
            self.lines.append(f"{v} = data.get({self.bind(segments[0])}, MISSING)")
            if len(segments) > 1:
                fallback = self.bind(condition.getter)
                for segment in segments[1:]:
                    self.lines.append(
                        f"{v} = {v}.get({self.bind(segment)}, MISSING) if type({v}) is dict"
                        f" else MISSING if {v} is MISSING else {fallback}(event)"
                    )
        self.lines.append(f"{t} = type({v})")
        return v, t

    def test(self, condition: _Condition) -> str:
        """An expression that holds iff the condition does (MISSING fails all but exists: false)."""
        v, t = self.value(condition)
        operator, expected = condition.operator, condition.prepared
        kind = type(expected)
        number = f"({t} is int or {t} is float)"
        if operator == "exists":
            return f"{v} is not MISSING" if expected else f"{v} is MISSING"
        if operator == "eq":
            if kind is str:
                return f"{v} == {self.bind(expected)}"  # only a string equals a string; MISSING is none
            if kind is bool:
                return f"{v} is {self.bind(expected)}"
            if expected is None:
                return f"{v} is None"
            if kind is int or kind is float:
                return f"{number} and {v} == {self.bind(expected)}"
            return f"{v} is not MISSING and strict_eq({v}, {self.bind(expected)})"
        if operator == "ne":
            if kind is str:
                return f"{v} is not MISSING and {v} != {self.bind(expected)}"
            return f"{v} is not MISSING and not strict_eq({v}, {self.bind(expected)})"
        if operator in _SYMBOLS:
            if kind is int or kind is float:
                return f"{number} and {v} {_SYMBOLS[operator]} {self.bind(expected)}"
            if kind is str:
                return f"{t} is str and {v} {_SYMBOLS[operator]} {self.bind(expected)}"
        elif operator in ("in", "not_in") and all(_keyable(item) for item in expected):
            keys = self.bind(frozenset(_key(item) for item in expected))
            if all(type(item) is str for item in expected):
                member = f"({t} is str and {v} in {keys})"
            else:
                # Containers equal no scalar (and are unhashable); booleans are keyed apart from 1.
                member = f"({t} is not list and {t} is not dict and ((BOOL, {v}) if {t} is bool else {v}) in {keys})"
            return member if operator == "in" else f"{v} is not MISSING and not {member}"
        elif operator == "regex":
            return f"{t} is str and {self.bind(expected.search)}({v}) is not None"
        elif operator == "contains" and kind is str:
            # A string operand is a substring, list member or key: plain ``in`` for all three.
            return f"({t} is str or {t} is list or {t} is dict) and {self.bind(expected)} in {v}"
        return f"{v} is not MISSING and holds({self.bind(operator)}, {self.bind(expected)}, {v})"

    def shared_test(self, condition: _Condition) -> str:
        """A boolean local computed once, for a test several rules of a plan repeat."""
        key = _test_key(condition)
        if key not in self.shared:
            name = self.shared[key] = f"x{len(self.shared)}"
            expression = self.test(condition)  # may emit the value's load first
            self.lines.append(f"{name} = {expression}")
        return self.shared[key]

    def build(self) -> Callable[[Event], Any]:
        lines = [f"def factory({', '.join(self.bindings)}):", "    def generated(event):", "        try:"]
        if self.uses_data:
            lines.append("            data = event.data")
        lines += [f"            {line}" for line in self.lines]
        lines += ["        except (TypeError, AttributeError):", "            return reference(event)"]
        lines.append("    return generated")
        generated: Callable[[Event], Any] = _factory("\n".join(lines))(**self.bindings)
        return generated


def _test_key(condition: _Condition) -> tuple[Any, ...]:
    # Equal JSON values have equal type and repr (1 and 1.0, True and 1 stay apart).
    return (condition.path, condition.operator, type(condition.operand), repr(condition.operand))


@functools.lru_cache(maxsize=1024)
def _factory(source: str) -> Callable[..., Callable[[Event], Any]]:
    namespace: dict[str, Any] = {}
    exec(compile(source, "<router.matching.index generated>", "exec"), namespace)
    factory: Callable[..., Callable[[Event], Any]] = namespace["factory"]
    return factory


def _build_check(conditions: Sequence[_Condition]) -> Check | None:
    """One generated function testing every condition (None when there are none)."""
    if not conditions:
        return None
    builder = _Builder(lambda event: all(_holds_on(c, event) for c in conditions))
    for condition in conditions:
        expression = builder.test(condition)
        builder.lines += [f"if not ({expression}):", "    return False"]
    builder.lines.append("return True")
    check: Check = builder.build()
    return check


class _CompiledRule:
    __slots__ = ("conditions", "index_keys", "position", "rest_checks", "rule", "stop")

    def __init__(self, position: int, rule: Rule) -> None:
        self.position = position
        self.rule = rule
        self.stop = rule.stop
        self.conditions = [
            _condition(path, operator, operand)
            for path, condition in rule.when.items()
            for operator, operand in condition.items()
        ]
        # The eq/in conditions a plan may turn into a dict lookup: path -> (condition, keys).
        self.index_keys: dict[str, tuple[_Condition, frozenset[Any]]] = {}
        for condition in self.conditions:
            keys = _index_keys(condition)
            if keys is not None and (condition.path not in self.index_keys or condition.operator == "eq"):
                self.index_keys[condition.path] = (condition, keys)
        self.rest_checks: dict[str | None, Check | None] = {}

    def check_without(self, path: str | None) -> Check | None:
        """The rule's check minus the indexed condition on ``path`` (all conditions for None)."""
        if path not in self.rest_checks:
            skipped = self.index_keys[path][0] if path is not None else None
            self.rest_checks[path] = _build_check([c for c in self.conditions if c is not skipped])
        return self.rest_checks[path]


def _index_keys(condition: _Condition) -> frozenset[Any] | None:
    if condition.operator == "eq" and _keyable(condition.prepared):
        return frozenset((_key(condition.prepared),))
    if condition.operator == "in" and all(_keyable(item) for item in condition.prepared):
        return frozenset(_key(item) for item in condition.prepared)
    return None


# An entry of a plan: (position, check or None for "always", stop, rule); positions are unique,
# so sorting entries never compares the checks.
_Entry = tuple[int, Check | None, bool, Rule]


class _Plan:
    """The candidates of one event type, ready to evaluate.

    Candidates that test one path with eq/in (the most common such path among them) are
    grouped by the values they accept, so one dict lookup finds those whose test holds; the
    others (the residual) are tested one by one. ``run`` starts as plain Python and is
    replaced by one generated function once the type has been seen ``compile_after`` times:
    the compile is worth it only for types that recur.
    """

    __slots__ = ("compile_after", "group_path", "groups", "residual", "residual_rules", "run", "runs", "stops")

    def __init__(self, candidates: list[_CompiledRule], min_group: int, compile_after: int) -> None:
        counts: dict[str, int] = {}
        for compiled in candidates:
            for indexed in compiled.index_keys:
                counts[indexed] = counts.get(indexed, 0) + 1
        path = max(counts, key=counts.__getitem__) if counts else None
        self.group_path = path if path is not None and counts[path] >= min_group else None
        residual: list[_Entry] = []
        self.residual_rules: list[_CompiledRule] = []
        grouped: dict[Any, list[_Entry]] = {}
        for compiled in candidates:
            if self.group_path is not None and self.group_path in compiled.index_keys:
                entry = (compiled.position, compiled.check_without(self.group_path), compiled.stop, compiled.rule)
                for key in compiled.index_keys[self.group_path][1]:
                    grouped.setdefault(key, []).append(entry)
            else:
                residual.append((compiled.position, compiled.check_without(None), compiled.stop, compiled.rule))
                self.residual_rules.append(compiled)
        self.groups: dict[Any, tuple[_Entry, ...]] = {key: tuple(entries) for key, entries in grouped.items()}
        self.residual: tuple[_Entry, ...] = tuple(residual)
        self.stops = any(compiled.stop for compiled in candidates)
        self.runs = 0
        self.compile_after = compile_after
        self.run: Callable[[Event], list[Rule]] = self._evaluate if compile_after else self._generate()
        if compile_after and candidates:
            self.run = self._warm_up

    def _warm_up(self, event: Event) -> list[Rule]:
        self.runs += 1
        if self.runs >= self.compile_after:
            self.run = self._generate()
        return self._evaluate(event)

    def _evaluate(self, event: Event) -> list[Rule]:
        # Test every candidate, then cut at the first stop: stop rules are rare, and merging
        # the few fired entries is cheaper than merging all candidates before testing.
        fired = [entry for entry in self.residual if (check := entry[1]) is None or check(event)]
        if self.group_path is not None:
            value = event_value(event, self.group_path)
            try:
                hits = self.groups.get((_BOOL_TAG, value) if type(value) is bool else value)
            except TypeError:  # a list or object equals no scalar operand
                hits = None
            if hits:
                more = [entry for entry in hits if (check := entry[1]) is None or check(event)]
                if more:
                    fired = sorted(fired + more) if fired else more
        if self.stops:
            for i, entry in enumerate(fired):
                if entry[2]:
                    del fired[i + 1 :]
                    break
        return [entry[3] for entry in fired]

    def _generate(self) -> Callable[[Event], list[Rule]]:
        """The whole of :meth:`_evaluate` as one generated function, residual tests inlined."""
        builder = _Builder(self._evaluate)
        lines = builder.lines
        lines += ["fired = []", "stopped = False"]
        # A test that several residual rules repeat is computed once; the others stay inline,
        # where ``and`` skips them when an earlier test of their rule failed.
        repeats: dict[tuple[Any, ...], int] = {}
        for compiled in self.residual_rules:
            for condition in compiled.conditions:
                repeats[_test_key(condition)] = repeats.get(_test_key(condition), 0) + 1
        for compiled, entry in zip(self.residual_rules, self.residual, strict=True):
            tests = [
                builder.shared_test(c) if repeats[_test_key(c)] > 1 else f"({builder.test(c)})"
                for c in compiled.conditions
            ]
            # ``stopped`` records that a stop rule fired, so the cut below runs only then.
            append = [f"fired.append({builder.bind(entry)})", *(["stopped = True"] if compiled.stop else [])]
            lines += [f"if {' and '.join(tests)}:", *(f"    {line}" for line in append)] if tests else append
        if self.group_path is not None:
            v, t = builder.value(_condition(self.group_path, "exists", True))
            lines += [
                f"if {t} is not list and {t} is not dict:",
                f"    hits = {builder.bind(self.groups)}.get((BOOL, {v}) if {t} is bool else {v})",
                "    if hits is not None:",
                "        before = len(fired)",
                "        for entry in hits:",
                "            check = entry[1]",
                "            if check is None or check(event):",
                "                fired.append(entry)",
                "                stopped = stopped or entry[2]",
                "        if before and len(fired) > before:",
                "            fired.sort()",
            ]
        if self.stops:
            lines += [
                "if stopped:",
                "    for i, entry in enumerate(fired):",
                "        if entry[2]:",
                "            del fired[i + 1:]",
                "            break",
            ]
        lines.append(f"return list(map({builder.bind(itemgetter(3))}, fired))")
        generated: Callable[[Event], list[Rule]] = builder.build()
        return generated


class _Node:
    """A node of the pattern trie, keyed by tokens (see :func:`tokens`).

    ``star`` and ``dstar`` are keyed by the separator written before the wildcard. A ``**``
    node is reached without consuming anything (none), or by consuming one segment after its
    separator; only then may it consume any further segment itself (``inside``).
    """

    __slots__ = ("children", "dstar", "is_dstar", "star", "terminal")

    def __init__(self, is_dstar: bool = False) -> None:
        self.children: dict[str, _Node] = {}
        self.star: dict[str, _Node] = {}
        self.dstar: dict[str, _Node] = {}
        self.is_dstar = is_dstar
        self.terminal: list[int] = []

    def insert(self, segments: list[str], position: int) -> None:
        node = self
        for segment in segments:
            separator, text = segment[0], segment[1:]
            if text == "**":
                node = node.dstar.setdefault(separator, _Node(is_dstar=True))
            elif text == "*":
                node = node.star.setdefault(separator, _Node())
            else:
                node = node.children.setdefault(segment, _Node())
        node.terminal.append(position)


_State = tuple[_Node, bool]  # a trie node, and whether a '**' node has consumed a segment


def _closure(states: Iterable[_State]) -> list[_State]:
    """``states`` plus every ``**`` node reachable from them without consuming a segment."""
    seen: dict[tuple[int, bool], _State] = {}
    stack = list(states)
    while stack:
        state = stack.pop()
        key = (id(state[0]), state[1])
        if key in seen:
            continue
        seen[key] = state
        stack.extend((dstar, False) for dstar in state[0].dstar.values())
    return list(seen.values())


def _step(states: list[_State], segment: str) -> list[_State]:
    """The states after consuming ``segment`` (a token) from ``states``."""
    separator = segment[0]
    following: list[_State] = []
    for node, inside in states:
        child = node.children.get(segment)
        if child is not None:
            following.append((child, False))
        star = node.star.get(separator)
        if star is not None:
            following.append((star, False))
        dstar = node.dstar.get(separator)
        if dstar is not None:
            following.append((dstar, True))
        if node.is_dstar and inside:
            following.append((node, True))
    return following


# -- the index --------------------------------------------------------------------------------


@dataclass
class ConditionVerdict:
    """How one operator of one condition judged the event."""

    path: str
    operator: str
    expected: Any
    actual: Any  # MISSING when the path is absent
    ok: bool


@dataclass
class RuleVerdict:
    """Why a rule did or did not fire for an event (see :meth:`RuleIndex.explain`)."""

    rule: Rule
    type_matched: bool
    conditions: list[ConditionVerdict]
    matched: bool
    fired: bool  # False when an earlier ``stop: true`` rule stopped the event
    reason: str


class RuleIndex:
    """The rules of a configuration, compiled for matching events.

    Raises :class:`ConfigError` (with :func:`rule_problems`) when a pattern or condition is
    invalid. ``cache_size`` bounds the event types whose plan is kept; ``min_group`` is how
    many candidates must test one path with eq/in before a plan turns it into a dict lookup;
    a type's candidates are compiled into one function once it was seen ``compile_after``
    times. Not thread-safe: each thread should use its own index.
    """

    def __init__(
        self,
        rules: Sequence[Rule],
        *,
        cache_size: int = DEFAULT_CACHE_SIZE,
        min_group: int = 2,
        compile_after: int = 16,
    ) -> None:
        problems = rule_problems(rules)
        if problems:
            raise ConfigError(problems)
        self.rules: tuple[Rule, ...] = tuple(rules)
        self._compiled = [_CompiledRule(position, rule) for position, rule in enumerate(self.rules)]
        self._exact: dict[str, list[int]] = {}
        self._trie = _Node()
        for position, rule in enumerate(self.rules):
            for pattern in dict.fromkeys(rule.on):
                if is_wildcard(pattern):
                    self._trie.insert(_segments(pattern), position)
                else:
                    self._exact.setdefault(pattern, []).append(position)
        self._cache_size = max(1, cache_size)
        self._min_group = max(1, min_group)
        self._compile_after = max(0, compile_after)
        self._plans: dict[str, _Plan] = {}

    def candidates(self, event_type: str) -> list[Rule]:
        """The rules whose ``on`` matches ``event_type``, in file order (conditions not tested)."""
        return [self.rules[position] for position in self._candidate_positions(event_type)]

    def match(self, event: Event) -> list[Rule]:
        """The rules ``event`` fires, in file order, up to and including the first ``stop: true``."""
        plan = self._plans.get(event.type)
        if plan is None:
            plan = self._plan(event.type)
        return plan.run(event)

    def explain(self, event: Event) -> list[RuleVerdict]:
        """One verdict per rule, in file order: whether it matched, fired, and why (not fast)."""
        verdicts: list[RuleVerdict] = []
        stopped_by: str | None = None
        candidates = set(self._candidate_positions(event.type))
        for compiled in self._compiled:
            rule = compiled.rule
            type_matched = compiled.position in candidates
            conditions = [_verdict(condition, event) for condition in compiled.conditions]
            matched = type_matched and all(c.ok for c in conditions)
            fired = matched and stopped_by is None
            if not type_matched:
                reason = f"type '{event.type}' matches none of [{', '.join(rule.on)}]"
            elif not matched:
                reason = "; ".join(_failure(c) for c in conditions if not c.ok)
            elif stopped_by is not None:
                reason = f"stopped by rule '{stopped_by}'"
            else:
                reason = "matched; stops later rules" if rule.stop else "matched"
            if fired and rule.stop:
                stopped_by = rule.name
            verdicts.append(RuleVerdict(rule, type_matched, conditions, matched, fired, reason))
        return verdicts

    def _candidate_positions(self, event_type: str) -> list[int]:
        positions = set(self._exact.get(event_type, ()))
        states = _closure([(self._trie, False)])
        for segment in tokens(event_type):
            states = _closure(_step(states, segment))
            if not states:
                break
        for node, _inside in states:
            positions.update(node.terminal)
        return sorted(positions)

    def _plan(self, event_type: str) -> _Plan:
        candidates = [self._compiled[p] for p in self._candidate_positions(event_type)]
        plan = _Plan(candidates, self._min_group, self._compile_after)
        if len(self._plans) >= self._cache_size:
            del self._plans[next(iter(self._plans))]  # evict the oldest type
        self._plans[event_type] = plan
        return plan


def _verdict(condition: _Condition, event: Event) -> ConditionVerdict:
    ok = _holds_on(condition, event)
    return ConditionVerdict(condition.path, condition.operator, condition.operand, condition.getter(event), ok)


def _failure(verdict: ConditionVerdict) -> str:
    """Human text for a failed condition: ``data.tier: 'free' not in ['gold']``."""
    path, operator = verdict.path, verdict.operator
    expected, actual = _show(verdict.expected), _show(verdict.actual)
    if verdict.actual is MISSING:
        if operator == "exists":
            return f"{path}: missing"
        return f"{path}: missing (needs {operator} {expected})"
    if operator == "eq":
        if isinstance(verdict.actual, bool) != isinstance(verdict.expected, bool):
            return f"{path}: {actual} != {expected} (booleans are not numbers)"
        return f"{path}: {actual} != {expected}"
    if operator == "ne":
        return f"{path}: {actual} == {expected}"
    if operator in _SYMBOLS:
        prepared = _prepare_value(verdict.expected)
        if not _comparable(verdict.actual, prepared):
            return f"{path}: {actual} cannot be compared with {expected} ({_kind(verdict.actual)} vs {_kind(prepared)})"
        return f"{path}: {actual} is not {_SYMBOLS[operator]} {expected}"
    if operator == "in":
        return f"{path}: {actual} not in {expected}"
    if operator == "not_in":
        return f"{path}: {actual} is in {expected}"
    if operator == "regex":
        if not isinstance(verdict.actual, str):
            return f"{path}: {actual} is not a string (regex {expected})"
        return f"{path}: {actual} does not match regex {expected}"
    if operator == "contains":
        return f"{path}: {actual} does not contain {expected}"
    return f"{path}: present ({actual}), expected missing"


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- the oracle -------------------------------------------------------------------------------


def naive_match(rules: Sequence[Rule], event: Event) -> list[Rule]:
    """The plain scan: test every rule in order. The reference :class:`RuleIndex` must agree with."""
    fired: list[Rule] = []
    for rule in rules:
        if not any(pattern_matches(pattern, event.type) for pattern in rule.on):
            continue
        if all(
            _naive_condition(event, path, operator, operand)
            for path, condition in rule.when.items()
            for operator, operand in condition.items()
        ):
            fired.append(rule)
            if rule.stop:
                break
    return fired


def _naive_condition(event: Event, path: str, operator: str, operand: Any) -> bool:
    actual = event_value(event, path)
    if operator == "exists":
        return (actual is not MISSING) is bool(operand)
    return actual is not MISSING and _holds(operator, _prepare(operator, operand), actual)


def compile_conditions(when: Mapping[str, Mapping[str, Any]]) -> Check:
    """The conditions of a ``when`` block as one compiled check (True when there are none)."""
    conditions = [
        _condition(path, op, operand) for path, condition in when.items() for op, operand in condition.items()
    ]
    check = _build_check(conditions)
    return check if check is not None else (lambda event: True)
