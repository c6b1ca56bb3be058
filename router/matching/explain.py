"""Why a rule did or did not fire for an event: verdicts per rule and condition, in words (``router test --explain``)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from router.config.models import Rule
from router.core.events import Event
from router.core.kinds import kind_of
from router.matching.conditions import SYMBOLS, Condition, comparable, holds_on, prepare_value
from router.matching.paths import MISSING
from router.matching.plan import CompiledRule


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


def explain(compiled_rules: Sequence[CompiledRule], candidates: Collection[int], event: Event) -> list[RuleVerdict]:
    """One verdict per rule, in file order; ``candidates`` are the positions whose ``on`` matches the type."""
    verdicts: list[RuleVerdict] = []
    stopped_by: str | None = None
    for compiled in compiled_rules:
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


def _verdict(condition: Condition, event: Event) -> ConditionVerdict:
    ok = holds_on(condition, event)
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
    if operator in SYMBOLS:
        prepared = prepare_value(verdict.expected)
        if not comparable(verdict.actual, prepared):
            return f"{path}: {actual} cannot be compared with {expected} ({kind_of(verdict.actual)} vs {kind_of(prepared)})"
        return f"{path}: {actual} is not {SYMBOLS[operator]} {expected}"
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
