"""The compiled rule index: which rules an event fires, fast, and why (``explain``).

Patterns (a rule's ``on``) are :mod:`router.core.patterns`; conditions (its ``when``) are
:mod:`.conditions`.

Firing
    Rules fire in file order; every matching rule fires until one with ``stop: true``, which
    fires itself and hides the event from every later rule.

How the index is fast
    Exact types live in a dict and wildcard patterns in a segment trie (:mod:`.trie`), so the
    candidate rules of a type are found without looking at the others. The candidates of each
    type are cached (bounded) as a plan (:mod:`.plan`): when several candidates test the same
    path with ``eq`` or ``in`` (``data.tenant: acme``), that path is read once and a dict lookup
    yields the candidates whose test it satisfies. Once a type recurs, its plan is compiled into
    one generated Python function (:mod:`.codegen`) that tests the other candidates inline. The
    cost of a match thus follows the rules that could fire for the event, not the size of
    rules.yaml. :func:`naive_match` is the plain scan the index must agree with (a property test
    checks that it does, on generated rules and events).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from router.config.models import Rule
from router.core.errors import ConfigError, Problem
from router.core.events import Event
from router.core.patterns import is_wildcard, pattern_error, pattern_matches
from router.matching.conditions import condition_error, event_value, holds, path_error, prepare
from router.matching.explain import RuleVerdict, explain
from router.matching.paths import MISSING
from router.matching.plan import CompiledRule, Plan
from router.matching.trie import PatternTrie

DEFAULT_CACHE_SIZE: Final = 4096
"""Event types whose candidate plan a :class:`RuleIndex` keeps."""


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
        self._compiled = [CompiledRule(position, rule) for position, rule in enumerate(self.rules)]
        self._exact: dict[str, list[int]] = {}
        self._trie = PatternTrie()
        for position, rule in enumerate(self.rules):
            for pattern in dict.fromkeys(rule.on):
                if is_wildcard(pattern):
                    self._trie.add(pattern, position)
                else:
                    self._exact.setdefault(pattern, []).append(position)
        self._cache_size = max(1, cache_size)
        self._min_group = max(1, min_group)
        self._compile_after = max(0, compile_after)
        self._plans: dict[str, Plan] = {}

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
        return explain(self._compiled, set(self._candidate_positions(event.type)), event)

    def _candidate_positions(self, event_type: str) -> list[int]:
        positions = self._trie.positions(event_type)
        positions.update(self._exact.get(event_type, ()))
        return sorted(positions)

    def _plan(self, event_type: str) -> Plan:
        candidates = [self._compiled[p] for p in self._candidate_positions(event_type)]
        plan = Plan(candidates, self._min_group, self._compile_after)
        if len(self._plans) >= self._cache_size:
            del self._plans[next(iter(self._plans))]  # evict the oldest type
        self._plans[event_type] = plan
        return plan


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
    return actual is not MISSING and holds(operator, prepare(operator, operand), actual)
