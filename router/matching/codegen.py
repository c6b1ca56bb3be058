"""Conditions compiled to Python source, for the hot path.

On the hot path the cost of a condition is in calls: a closure per operator and per path costs
several calls per condition, generated code none. Rule checks are one function per rule; a
plan's residual candidates become one function testing them all inline (:mod:`.plan`). Values
only enter the source as names of a factory's arguments (b7, b8...), never as text, so no
config string becomes code. Sources of the same shape (say, one string eq on data.tenant) are
compiled once; values live in closure cells rather than per-rule globals, which would defeat
the interpreter's inline caches on shared code.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from router.core.events import Event
from router.matching.conditions import (
    BOOL_TAG,
    SYMBOLS,
    Condition,
    hash_key,
    holds,
    holds_on,
    keyable,
    make_condition,
    strict_eq,
)
from router.matching.paths import MISSING

Check = Callable[[Event], bool]


class Builder:
    """Writes one generated function: its body lines, and the values its names are bound to."""

    def __init__(self, reference: Callable[[Event], Any]) -> None:
        # ``reference`` is the slow path, taken when a value of an unexpected Python type (an
        # event built in code rather than decoded) trips the generated code: same answers.
        self.bindings: dict[str, Any] = {
            "MISSING": MISSING,
            "BOOL": BOOL_TAG,
            "strict_eq": strict_eq,
            "holds": holds,
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

    def value(self, condition: Condition) -> tuple[str, str]:
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

    def test(self, condition: Condition) -> str:
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
        if operator in SYMBOLS:
            if kind is int or kind is float:
                return f"{number} and {v} {SYMBOLS[operator]} {self.bind(expected)}"
            if kind is str:
                return f"{t} is str and {v} {SYMBOLS[operator]} {self.bind(expected)}"
        elif operator in ("in", "not_in") and all(keyable(item) for item in expected):
            keys = self.bind(frozenset(hash_key(item) for item in expected))
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

    def shared_test(self, condition: Condition) -> str:
        """A boolean local computed once, for a test several rules of a plan repeat."""
        key = test_key(condition)
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


def test_key(condition: Condition) -> tuple[Any, ...]:
    # Equal JSON values have equal type and repr (1 and 1.0, True and 1 stay apart).
    return (condition.path, condition.operator, type(condition.operand), repr(condition.operand))


@functools.lru_cache(maxsize=1024)
def _factory(source: str) -> Callable[..., Callable[[Event], Any]]:
    namespace: dict[str, Any] = {}
    exec(compile(source, "<router.matching.codegen generated>", "exec"), namespace)
    factory: Callable[..., Callable[[Event], Any]] = namespace["factory"]
    return factory


def build_check(conditions: Sequence[Condition]) -> Check | None:
    """One generated function testing every condition (None when there are none)."""
    if not conditions:
        return None
    builder = Builder(lambda event: all(holds_on(c, event) for c in conditions))
    for condition in conditions:
        expression = builder.test(condition)
        builder.lines += [f"if not ({expression}):", "    return False"]
    builder.lines.append("return True")
    check: Check = builder.build()
    return check


def compile_conditions(when: Mapping[str, Mapping[str, Any]]) -> Check:
    """The conditions of a ``when`` block as one compiled check (True when there are none)."""
    conditions = [
        make_condition(path, op, operand) for path, condition in when.items() for op, operand in condition.items()
    ]
    check = build_check(conditions)
    return check if check is not None else (lambda event: True)
