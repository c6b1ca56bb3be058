"""Rule matching: patterns, conditions, stop, explain; and the dotted paths they rely on."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from router.config.models import Rule
from router.core.errors import ConfigError
from router.core.events import Event
from router.core.patterns import compile_pattern, pattern_error, pattern_matches
from router.matching.codegen import compile_conditions
from router.matching.conditions import path_error
from router.matching.index import RuleIndex, naive_match, rule_problems
from router.matching.paths import MISSING, compile_path, lookup
from tests.builders import make_event

T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


def event(type: str = "planet.completed", data: dict[str, Any] | None = None, **fields: Any) -> Event:
    fields.setdefault("source", "test")
    return make_event(data or {}, type=type, id="e1", time=T0, **fields)


def rule(name: str, on: str | list[str] = "**", when: dict[str, Any] | None = None, stop: bool = False) -> Rule:
    return Rule.model_validate({"name": name, "on": on, "when": when or {}, "channels": ["c"], "stop": stop})


def names(rules: list[Rule]) -> list[str]:
    return [r.name for r in rules]


# -- paths -----------------------------------------------------------------------------------

DOC = {"data": {"user": {"id": 7, "nick": None}, "items": [{"sku": "a"}, {"sku": "b"}], "0": "zero"}}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("data.user.id", 7),
        ("data.user.nick", None),  # present null is not missing
        ("data.items.1.sku", "b"),
        ("data.0", "zero"),  # a digit segment is a key of a mapping
        ("data.items.2.sku", MISSING),
        ("data.items.x", MISSING),
        ("data.items.-1", MISSING),
        ("data.user.id.more", MISSING),
        ("nope", MISSING),
    ],
)
def test_lookup_and_compiled_paths(path: str, expected: Any) -> None:
    value = lookup(DOC, path)
    assert value == expected
    assert (value is MISSING) is (expected is MISSING)
    assert compile_path(path)(DOC) == value


@pytest.mark.parametrize("path", ["", "a..b", ".a", "a."])
def test_malformed_paths_are_rejected(path: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        compile_path(path)


def test_missing_is_falsy_and_named() -> None:
    assert not MISSING
    assert repr(MISSING) == "MISSING"


# -- patterns --------------------------------------------------------------------------------

PATTERN_CASES = [
    ("a", "a", True),
    ("a", "a.b", False),
    ("a.*", "a.b", True),
    ("a.*", "a", False),
    ("a.*", "a.b.c", False),
    ("a.**", "a", True),
    ("a.**", "a.b", True),
    ("a.**", "a.b.c", True),
    ("a.**", "ab", False),
    ("a.**", "b.a", False),
    ("**", "a", True),
    ("**", "a.b.c.d", True),
    ("*", "a", True),
    ("*", "a.b", False),
    ("**.c", "c", True),
    ("**.c", "a.b.c", True),
    ("**.c", "a.c.b", False),
    ("a.**.z", "a.z", True),
    ("a.**.z", "a.b.z", True),
    ("a.**.z", "a.b.c.z", True),
    ("a.**.z", "a.b", False),
    ("a.**.z", "a.z.b", False),
    ("*.b", "a.b", True),
    ("*.b", "b", False),
    ("a.*.**", "a", False),
    ("a.*.**", "a.b", True),
    ("a.**.**", "a", True),
    ("**.*", "a", True),
    ("**.*", "a.b.c", True),
    ("a.**.b.**", "a.x.b.y.b", True),
    ("a.b", "a.c", False),
    # '/' is a segment boundary too (Inngest-style types), and the separator before a wildcard counts.
    ("challenging/**", "challenging/challenge.posted", True),
    ("challenging/**", "challenging", True),
    ("challenging/**", "challenging.posted", False),
    ("challenging/**", "challengingx/a", False),
    ("challenging/*", "challenging/challenge", True),
    ("challenging/*", "challenging/challenge.posted", False),
    ("space/completed.*", "space/completed.planet", True),
    ("space/completed.*", "space.completed.planet", False),
    ("space/*.planet", "space/completed.planet", True),
    ("*/completed.planet", "space/completed.planet", True),
    ("**.planet", "space/completed.planet", True),
    ("**/completed.**", "space/completed.planet", True),
    ("**", "space/completed.planet", True),
    ("a.**", "a/b", False),
    ("space/completed.planet", "space/completed.planet", True),
    ("space/completed.planet", "space.completed.planet", False),
]


@pytest.mark.parametrize(("pattern", "event_type", "expected"), PATTERN_CASES)
def test_pattern_semantics(pattern: str, event_type: str, expected: bool) -> None:
    assert pattern_matches(pattern, event_type) is expected
    assert compile_pattern(pattern)(event_type) is expected
    fired = RuleIndex([rule("r", pattern)]).match(event(event_type))
    assert names(fired) == (["r"] if expected else [])


def test_a_list_of_patterns_matches_if_any_does() -> None:
    index = RuleIndex([rule("r", ["user.created", "planet.*"])])
    assert names(index.match(event("planet.completed"))) == ["r"]
    assert names(index.match(event("user.created"))) == ["r"]
    assert index.match(event("user.deleted")) == []


@pytest.mark.parametrize("pattern", ["a", "a.b", "*", "**", "a.*.b", "a.**", "app/user.created", "x-y_z:1"])
def test_valid_patterns(pattern: str) -> None:
    assert pattern_error(pattern) is None


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("", "cannot be empty"),
        ("a..b", "empty segment"),
        (".a", "empty segment"),
        ("a.", "empty segment"),
        ("a*", "whole segments"),
        ("a.b**", "whole segments"),
        ("a.#", "RabbitMQ syntax"),
        ("a b", "whitespace"),
        ("a//b", "empty segment"),
        ("a/", "empty segment"),
        ("challenging/challenge*", "whole segments"),
    ],
)
def test_invalid_patterns(pattern: str, message: str) -> None:
    error = pattern_error(pattern)
    assert error is not None and message in error


def test_index_refuses_invalid_rules_with_located_problems() -> None:
    rules = [
        rule("ok", "a.b"),
        rule("bad", ["a.b", "a..b"]),
        rule("worse", "x", {"data.s": {"regex": "("}, "dat.x": 1, "data.n": {"in": 3}}),
    ]
    with pytest.raises(ConfigError) as caught:
        RuleIndex(rules)
    found = [(p.path, p.message) for p in caught.value.problems]
    assert [path for path, _ in found] == ["rules[1].on[1]", "rules[2].when", "rules[2].when", "rules[2].when"]
    assert "pattern 'a..b' has an empty segment" in found[0][1]
    assert "'data.s': regex: invalid regular expression" in found[1][1]
    assert "path 'dat.x' must start with one of" in found[2][1]
    assert "did you mean 'data.x'" in found[2][1]
    assert "'data.n': in needs a list of values, got a number" in found[3][1]


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("tier", "did you mean 'time' or 'data.tier'?"),
        ("dta.tier", "did you mean 'data.tier' or 'data.dta.tier'?"),
        ("dta..x", "empty segment"),
    ],
)
def test_path_errors(path: str, fragment: str) -> None:
    error = path_error(path)
    assert error is not None and fragment in error


def test_yaml_dates_on_data_paths_are_flagged() -> None:
    problems = rule_problems([rule("r", "a", {"data.day": {"eq": date(2024, 5, 1)}})])
    assert len(problems) == 1 and "quote it" in problems[0].message


# -- operators -------------------------------------------------------------------------------

OPERATOR_CASES: list[tuple[str, Any, Any, bool]] = [
    # operator, operand, actual (MISSING = absent), holds
    ("eq", "gold", "gold", True),
    ("eq", "gold", "free", False),
    ("eq", 3, 3.0, True),
    ("eq", 1, True, False),  # booleans are not numbers
    ("eq", True, 1, False),
    ("eq", True, True, True),
    ("eq", None, None, True),
    ("eq", None, MISSING, False),
    ("eq", "1", 1, False),
    ("eq", [1, 2], [1, 2], True),
    ("eq", [1], [True], False),
    ("eq", "gold", MISSING, False),
    ("ne", "gold", "free", True),
    ("ne", "gold", "gold", False),
    ("ne", 1, True, True),
    ("ne", "gold", MISSING, False),  # missing fails ne too
    ("lt", 3, 2, True),
    ("lt", 3, 3, False),
    ("lte", 3, 3, True),
    ("lte", 3, 4, False),
    ("gt", 3, 4, True),
    ("gt", 3, 3, False),
    ("gte", 3, 3.0, True),
    ("gte", 3, 2.5, False),
    ("gte", 3, "5", False),  # incompatible types: false, not an error
    ("gte", 0, True, False),  # a boolean is not a number
    ("gt", "b", "c", True),  # strings compare by code point
    ("gt", "b", 5, False),
    ("lt", 3, None, False),
    ("lt", 3, [1], False),
    ("gte", 3, MISSING, False),
    ("in", ["gold", "platinum"], "gold", True),
    ("in", ["gold", "platinum"], "free", False),
    ("in", [1, 2], True, False),
    ("in", [True], 1, False),
    ("in", [1, 2], 2.0, True),
    ("in", [[1], 2], [1], True),  # unhashable members still compare
    ("in", ["a"], ["a"], False),
    ("in", [None], None, True),
    ("in", ["gold"], MISSING, False),
    ("not_in", ["gold"], "free", True),
    ("not_in", ["gold"], "gold", False),
    ("not_in", [1], True, True),
    ("not_in", ["a"], {"a": 1}, True),
    ("not_in", ["gold"], MISSING, False),
    ("regex", "^gold", "golden", True),
    ("regex", "old", "golden", True),  # search, not match
    ("regex", "^old", "golden", False),
    ("regex", "1", 1, False),  # strings only
    ("regex", ".", MISSING, False),
    ("contains", "ol", "gold", True),
    ("contains", "x", "gold", False),
    ("contains", 1, "a1", False),
    ("contains", "gold", ["gold", "free"], True),
    ("contains", 1, [True], False),
    ("contains", 1, [1.0], True),
    ("contains", "k", {"k": 0}, True),
    ("contains", "v", {"k": "v"}, False),
    ("contains", "a", 5, False),
    ("contains", "a", MISSING, False),
    ("exists", True, None, True),
    ("exists", True, MISSING, False),
    ("exists", False, MISSING, True),
    ("exists", False, 0, False),
]


@pytest.mark.parametrize(("operator", "operand", "actual", "holds"), OPERATOR_CASES)
def test_operator(operator: str, operand: Any, actual: Any, holds: bool) -> None:
    data = {} if actual is MISSING else {"v": actual}
    rules = [rule("r", "a.b", {"data.v": {operator: operand}})]
    ev = event("a.b", data)
    expected = ["r"] if holds else []
    assert names(RuleIndex(rules).match(ev)) == expected
    assert names(RuleIndex(rules, compile_after=0).match(ev)) == expected  # the generated plan
    assert names(naive_match(rules, ev)) == expected
    assert compile_conditions(rules[0].when)(ev) is holds
    (verdict,) = RuleIndex(rules).explain(ev)
    assert verdict.conditions[0].ok is holds
    assert verdict.conditions[0].actual is MISSING if actual is MISSING else verdict.conditions[0].actual == actual


def test_bare_value_means_eq_and_all_conditions_must_hold() -> None:
    index = RuleIndex([rule("r", "a.b", {"data.tier": "gold", "data.n": {"gte": 3, "lt": 10}})])
    assert names(index.match(event("a.b", {"tier": "gold", "n": 5}))) == ["r"]
    assert index.match(event("a.b", {"tier": "gold", "n": 10})) == []
    assert index.match(event("a.b", {"tier": "free", "n": 5})) == []


def test_conditions_on_envelope_fields_and_headers() -> None:
    index = RuleIndex(
        [
            rule("by-source", "**", {"source": "billing"}),
            rule("by-header", "**", {"headers.x-tenant": {"in": ["acme"]}}),
            rule("no-subject", "**", {"subject": {"exists": False}}),
            rule("subject", "**", {"subject": {"regex": "^inv-"}}),
            rule("recent", "**", {"time": {"gte": datetime(2024, 1, 1, tzinfo=UTC)}}),
            rule("by-day", "**", {"time": {"lt": date(2024, 5, 2)}}),  # YAML date: midnight UTC
        ]
    )
    assert names(index.match(event(source="billing", headers={"x-tenant": "acme"}))) == [
        "by-source",
        "by-header",
        "no-subject",
        "recent",
        "by-day",
    ]
    assert names(index.match(event(subject="inv-1"))) == ["subject", "recent", "by-day"]


@pytest.mark.parametrize("compile_after", [0, 1000])
def test_values_of_unusual_python_types_do_not_break_matching(compile_after: int) -> None:
    # Events built in code (not decoded from JSON) may hold other mappings and containers.
    rules = [
        rule("nested", "a", {"data.n.m": 1}),
        rule("member", "a", {"data.s": {"in": [1, "x"]}}),
        rule("tenant-1", "a", {"data.s": "x"}),
        rule("tenant-2", "a", {"data.s": {"in": ["x", "y"]}}),
    ]
    index = RuleIndex(rules, compile_after=compile_after)
    ev = event("a", {"n": MappingProxyType({"m": 1}), "s": {1, "x"}})
    assert names(index.match(ev)) == ["nested"]
    assert index.match(ev) == naive_match(rules, ev)


def test_exists_false_with_another_operator_never_holds() -> None:
    index = RuleIndex([rule("r", "a", {"data.v": {"exists": False, "ne": 1}})])
    assert index.match(event("a", {})) == []
    assert index.match(event("a", {"v": 2})) == []


# -- firing order and stop -------------------------------------------------------------------


def test_rules_fire_in_file_order_until_stop() -> None:
    rules = [
        rule("first", "planet.*"),
        rule("vip", "planet.completed", {"data.tier": "gold"}, stop=True),
        rule("after", "**"),
    ]
    index = RuleIndex(rules)
    assert names(index.match(event(data={"tier": "gold"}))) == ["first", "vip"]
    # A stop rule that does not match stops nothing.
    assert names(index.match(event(data={"tier": "free"}))) == ["first", "after"]


@pytest.mark.parametrize("compile_after", [0, 1000])
def test_stop_with_indexed_conditions_keeps_file_order(compile_after: int) -> None:
    rules = [rule(f"t{i}", "a.b", {"data.tenant": f"t{i % 3}"}, stop=(i == 4)) for i in range(9)]
    rules.insert(2, rule("audit", "**"))
    rules.append(rule("late", "**"))
    index = RuleIndex(rules, compile_after=compile_after)
    for tenant in ("t0", "t1", "t2", "none"):
        ev = event("a.b", {"tenant": tenant})
        assert index.match(ev) == naive_match(rules, ev)
    assert names(index.match(event("a.b", {"tenant": "t1"}))) == ["t1", "audit", "t4"]


def test_candidates_are_only_the_rules_whose_pattern_matches() -> None:
    rules = [rule(f"exact{i}", f"type{i}.done") for i in range(100)]
    rules += [rule("wild", "type5.*"), rule("deep", "**.done"), rule("other", "x.**")]
    index = RuleIndex(rules)
    assert names(index.candidates("type5.done")) == ["exact5", "wild", "deep"]
    assert names(index.candidates("nothing")) == []


def test_plan_cache_is_bounded_and_stays_correct() -> None:
    rules = [rule("a", "t.*", {"data.k": 1}), rule("b", "**", {"data.k": {"in": [1, 2]}})]
    index = RuleIndex(rules, cache_size=4)
    for round_ in range(3):
        for i in range(20):
            ev = event(f"t.x{i}", {"k": 1 + (i + round_) % 3})
            assert index.match(ev) == naive_match(rules, ev)
    assert len(index._plans) <= 4


def test_booleans_do_not_hit_numeric_index_keys() -> None:
    rules = [rule("one", "a", {"data.v": 1}), rule("also-one", "a", {"data.v": {"in": [1, 5]}})]
    index = RuleIndex(rules)
    assert index.match(event("a", {"v": True})) == []
    assert names(index.match(event("a", {"v": 1.0}))) == ["one", "also-one"]
    assert index.match(event("a", {"v": [1]})) == []


# -- explain ---------------------------------------------------------------------------------


def test_explain_gives_one_verdict_per_rule_with_reasons() -> None:
    rules = [
        rule("other-type", "user.*"),
        rule("tier", "planet.*", {"data.tier": {"in": ["gold"]}}),
        rule("missing", "planet.**", {"data.planet.difficulty": {"gte": 3}}),
        rule("stopper", "planet.completed", stop=True),
        rule("late", "**"),
        rule("late-miss", "**", {"data.n": {"gt": 1}}),
    ]
    ev = event(data={"tier": "free", "n": "7"})
    verdicts = RuleIndex(rules).explain(ev)
    assert [v.rule.name for v in verdicts] == [r.name for r in rules]
    reasons = {v.rule.name: v.reason for v in verdicts}
    assert reasons["other-type"] == "type 'planet.completed' matches none of [user.*]"
    assert reasons["tier"] == "data.tier: 'free' not in ['gold']"
    assert reasons["missing"] == "data.planet.difficulty: missing (needs gte 3)"
    assert reasons["stopper"] == "matched; stops later rules"
    assert reasons["late"] == "stopped by rule 'stopper'"
    assert reasons["late-miss"] == "data.n: '7' cannot be compared with 1 (a string vs a number)"
    late = verdicts[4]
    assert (late.type_matched, late.matched, late.fired) == (True, True, False)
    assert [v.rule for v in verdicts if v.fired] == RuleIndex(rules).match(ev)
    tier = verdicts[1].conditions[0]
    assert (tier.path, tier.operator, tier.expected, tier.actual, tier.ok) == (
        "data.tier",
        "in",
        ["gold"],
        "free",
        False,
    )
    assert verdicts[2].conditions[0].actual is MISSING


@pytest.mark.parametrize(
    ("condition", "data", "reason"),
    [
        ({"eq": 1}, {"v": True}, "data.v: True != 1 (booleans are not numbers)"),
        ({"ne": "x"}, {"v": "x"}, "data.v: 'x' == 'x'"),
        ({"lt": 3}, {"v": 5}, "data.v: 5 is not < 3"),
        ({"not_in": ["x"]}, {"v": "x"}, "data.v: 'x' is in ['x']"),
        ({"regex": "^a"}, {"v": 5}, "data.v: 5 is not a string (regex '^a')"),
        ({"regex": "^a"}, {"v": "ba"}, "data.v: 'ba' does not match regex '^a'"),
        ({"contains": "z"}, {"v": "abc"}, "data.v: 'abc' does not contain 'z'"),
        ({"exists": True}, {}, "data.v: missing"),
        ({"exists": False}, {"v": 0}, "data.v: present (0), expected missing"),
    ],
)
def test_explain_failure_reasons(condition: dict[str, Any], data: dict[str, Any], reason: str) -> None:
    (verdict,) = RuleIndex([rule("r", "a", {"data.v": condition})]).explain(event("a", data))
    assert (verdict.matched, verdict.reason) == (False, reason)


def _documented_pattern_rows() -> list[tuple[str, list[str], list[str]]]:
    """The rows of docs/configuration.md's pattern table: (pattern, matches, does not match)."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text(encoding="utf-8")
    section = doc[doc.index("### `on`: event type patterns") : doc.index("### `when`: conditions")]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            spans = [re.findall(r"`([^`]+)`", cell) for cell in cells]
            rows.append((spans[0][0], spans[1], spans[2]))
    return rows


@pytest.mark.parametrize(("pattern", "matching", "other"), _documented_pattern_rows())
def test_the_documented_pattern_table_is_true(pattern: str, matching: list[str], other: list[str]) -> None:
    index = RuleIndex([rule("r", pattern)])
    for event_type in matching:
        assert names(index.match(event(event_type))) == ["r"], (pattern, event_type)
    for event_type in other:
        assert index.match(event(event_type)) == [], (pattern, event_type)


def test_the_documented_pattern_table_has_the_domain_glob() -> None:
    assert "challenging/**" in [row[0] for row in _documented_pattern_rows()]
