"""A rule compiled for matching (:class:`CompiledRule`), and one event type's candidates ready to evaluate (:class:`Plan`)."""

from __future__ import annotations

from collections.abc import Callable
from operator import itemgetter
from typing import Any

from router.config.models import Rule
from router.core.events import Event
from router.matching.codegen import Builder, Check, build_check, test_key
from router.matching.conditions import BOOL_TAG, Condition, event_value, hash_key, keyable, make_condition


class CompiledRule:
    __slots__ = ("conditions", "index_keys", "position", "rest_checks", "rule", "stop")

    def __init__(self, position: int, rule: Rule) -> None:
        self.position = position
        self.rule = rule
        self.stop = rule.stop
        self.conditions = [
            make_condition(path, operator, operand)
            for path, condition in rule.when.items()
            for operator, operand in condition.items()
        ]
        # The eq/in conditions a plan may turn into a dict lookup: path -> (condition, keys).
        self.index_keys: dict[str, tuple[Condition, frozenset[Any]]] = {}
        for condition in self.conditions:
            keys = index_keys_of(condition)
            if keys is not None and (condition.path not in self.index_keys or condition.operator == "eq"):
                self.index_keys[condition.path] = (condition, keys)
        self.rest_checks: dict[str | None, Check | None] = {}

    def check_without(self, path: str | None) -> Check | None:
        """The rule's check minus the indexed condition on ``path`` (all conditions for None)."""
        if path not in self.rest_checks:
            skipped = self.index_keys[path][0] if path is not None else None
            self.rest_checks[path] = build_check([c for c in self.conditions if c is not skipped])
        return self.rest_checks[path]


def index_keys_of(condition: Condition) -> frozenset[Any] | None:
    if condition.operator == "eq" and keyable(condition.prepared):
        return frozenset((hash_key(condition.prepared),))
    if condition.operator == "in" and all(keyable(item) for item in condition.prepared):
        return frozenset(hash_key(item) for item in condition.prepared)
    return None


# An entry of a plan: (position, check or None for "always", stop, rule); positions are unique,
# so sorting entries never compares the checks.
Entry = tuple[int, Check | None, bool, Rule]


class Plan:
    """The candidates of one event type, ready to evaluate.

    Candidates that test one path with eq/in (the most common such path among them) are
    grouped by the values they accept, so one dict lookup finds those whose test holds; the
    others (the residual) are tested one by one. ``run`` starts as plain Python and is
    replaced by one generated function once the type has been seen ``compile_after`` times:
    the compile is worth it only for types that recur.
    """

    __slots__ = ("compile_after", "group_path", "groups", "residual", "residual_rules", "run", "runs", "stops")

    def __init__(self, candidates: list[CompiledRule], min_group: int, compile_after: int) -> None:
        counts: dict[str, int] = {}
        for compiled in candidates:
            for indexed in compiled.index_keys:
                counts[indexed] = counts.get(indexed, 0) + 1
        path = max(counts, key=counts.__getitem__) if counts else None
        self.group_path = path if path is not None and counts[path] >= min_group else None
        residual: list[Entry] = []
        self.residual_rules: list[CompiledRule] = []
        grouped: dict[Any, list[Entry]] = {}
        for compiled in candidates:
            if self.group_path is not None and self.group_path in compiled.index_keys:
                entry = (compiled.position, compiled.check_without(self.group_path), compiled.stop, compiled.rule)
                for key in compiled.index_keys[self.group_path][1]:
                    grouped.setdefault(key, []).append(entry)
            else:
                residual.append((compiled.position, compiled.check_without(None), compiled.stop, compiled.rule))
                self.residual_rules.append(compiled)
        self.groups: dict[Any, tuple[Entry, ...]] = {key: tuple(entries) for key, entries in grouped.items()}
        self.residual: tuple[Entry, ...] = tuple(residual)
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
                hits = self.groups.get((BOOL_TAG, value) if type(value) is bool else value)
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
        builder = Builder(self._evaluate)
        lines = builder.lines
        lines += ["fired = []", "stopped = False"]
        # A test that several residual rules repeat is computed once; the others stay inline,
        # where ``and`` skips them when an earlier test of their rule failed.
        repeats: dict[tuple[Any, ...], int] = {}
        for compiled in self.residual_rules:
            for condition in compiled.conditions:
                repeats[test_key(condition)] = repeats.get(test_key(condition), 0) + 1
        for compiled, entry in zip(self.residual_rules, self.residual, strict=True):
            tests = [
                builder.shared_test(c) if repeats[test_key(c)] > 1 else f"({builder.test(c)})"
                for c in compiled.conditions
            ]
            # ``stopped`` records that a stop rule fired, so the cut below runs only then.
            append = [f"fired.append({builder.bind(entry)})", *(["stopped = True"] if compiled.stop else [])]
            lines += [f"if {' and '.join(tests)}:", *(f"    {line}" for line in append)] if tests else append
        if self.group_path is not None:
            v, t = builder.value(make_condition(self.group_path, "exists", True))
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
