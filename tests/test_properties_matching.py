"""Properties of condition evaluation on arbitrary event data and arbitrary rule sets.

Whatever the event carries, matching never raises: a condition whose operand and value do not
fit is simply false (README "Conditions"). A rule set is either accepted whole or rejected at
load with located problems (an invalid regex is a config error, never a runtime one).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.config.models import OPERATORS, Rule
from router.core.errors import ConfigError
from router.core.events import Event
from router.matching.index import RuleIndex, naive_match

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEYS = ["a", "b", "0", "1"]  # few keys, so that paths and data meet; digits also index lists

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=3),
    st.integers(),
    st.integers(min_value=10**300, max_value=10**400),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 1.0, 1.5]),
    st.text(alphabet="ab01.", max_size=4),
    st.text(max_size=10),
)
trees = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=3)), children, max_size=3)
    ),
    max_leaves=15,
)
data_objects = st.dictionaries(st.sampled_from(KEYS), trees, max_size=4)

paths = st.one_of(
    st.lists(st.sampled_from(KEYS), min_size=1, max_size=3).map(lambda segments: "data." + ".".join(segments)),
    st.sampled_from(["type", "id", "source", "time", "subject", "routing_key", "headers.h", "data"]),
)

# Regex patterns from regex material: many are invalid ("(", "a{2,1}", "*") and must be
# rejected at load. Short patterns on short strings cannot backtrack for long.
regex_patterns = st.text(alphabet="ab.*+?()[]{}|^$\\0129,-", max_size=8)
YAML_FLOATS = [float("inf"), float("-inf"), float("nan")]  # .inf and .nan are YAML numbers
operands = st.one_of(trees, st.sampled_from(YAML_FLOATS), st.lists(trees, max_size=3), regex_patterns)
OPERAND_FOR: dict[str, st.SearchStrategy[Any]] = {
    "regex": st.one_of(regex_patterns, regex_patterns, trees),
    "exists": st.one_of(st.booleans(), st.booleans(), trees),
    "in": st.one_of(st.lists(trees, max_size=3), trees),
    "not_in": st.one_of(st.lists(trees, max_size=3), trees),
}


@st.composite
def conditions(draw: st.DrawFn) -> dict[str, Any]:
    ops = draw(st.lists(st.sampled_from(OPERATORS), min_size=1, max_size=2, unique=True))
    return {op: draw(OPERAND_FOR.get(op, operands)) for op in ops}


@st.composite
def rule_sets(draw: st.DrawFn) -> list[Rule]:
    rules = []
    for i in range(draw(st.integers(min_value=0, max_value=6))):
        when = draw(st.dictionaries(paths, conditions(), max_size=3))
        on = draw(st.sampled_from(["**", "order.*", "order.created", ["a.b", "order.**"]]))
        rules.append(
            Rule.model_validate(
                {"name": f"r{i}", "on": on, "when": when, "channels": ["c"], "stop": draw(st.booleans())}
            )
        )
    return rules


@st.composite
def events(draw: st.DrawFn) -> Event:
    return Event(
        type=draw(st.sampled_from(["order.created", "order.paid", "a.b"])),
        id=draw(st.sampled_from(["e1", "1", ""])),
        source="svc",
        time=draw(st.sampled_from([datetime(2024, 5, 1, tzinfo=UTC), datetime(1970, 1, 1, tzinfo=UTC)])),
        data=draw(data_objects),
        subject=draw(st.one_of(st.none(), st.text(max_size=3))),
        routing_key=draw(st.one_of(st.none(), st.just("order.created"))),
        headers=draw(st.sampled_from([{}, {"h": "a"}, {"h": 1}, {"h": [1]}])),
    )


def _invalid_regex(rules: list[Rule]) -> bool:
    for rule in rules:
        for condition in rule.when.values():
            pattern = condition.get("regex")
            if isinstance(pattern, str):
                try:
                    re.compile(pattern)
                except re.error:
                    return True
    return False


@SETTINGS
@given(rule_sets(), st.lists(events(), min_size=1, max_size=6))
def test_matching_never_raises_and_agrees_with_the_plain_scan(rules: list[Rule], event_list: list[Event]) -> None:
    try:
        indexes = [RuleIndex(rules, min_group=1, compile_after=n) for n in (0, 1000)]
    except ConfigError as error:
        assert error.problems and all(p.path.startswith("rules[") for p in error.problems)
        return
    assert not _invalid_regex(rules), "an invalid regex must be rejected when the rules are loaded"
    for event in event_list + event_list:  # the second pass runs the cached, compiled plans
        expected = naive_match(rules, event)
        for index in indexes:
            assert index.match(event) == expected
        index.explain(event)  # `router test --explain` on the same input never raises either


def test_an_invalid_regex_is_a_located_config_error() -> None:
    rule = Rule.model_validate({"name": "r", "on": "**", "when": {"data.a": {"regex": "(a"}}, "channels": ["c"]})
    try:
        RuleIndex([rule])
    except ConfigError as error:
        [problem] = error.problems
        assert problem.path == "rules[0].when"
        assert "invalid regular expression" in problem.message and "data.a" in problem.message
    else:
        raise AssertionError("'(a' was accepted as a regex")


def _number(value: Any) -> bool:
    return type(value) in (int, float)


def _oracle(operator: str, actual: Any, operand: Any) -> bool:
    """README: lt/lte/gt/gte compare two numbers or two strings; any other pairing is false."""
    if not ((_number(actual) and _number(operand)) or (type(actual) is str and type(operand) is str)):
        return False
    return bool(
        {"lt": actual < operand, "lte": actual <= operand, "gt": actual > operand, "gte": actual >= operand}[operator]
    )


ordered_operands = st.one_of(
    st.integers(), st.floats(allow_nan=False), st.text(max_size=3), st.integers(min_value=10**300, max_value=10**301)
)


@SETTINGS
@given(
    st.sampled_from(["lt", "lte", "gt", "gte"]),
    ordered_operands,
    trees,
    st.booleans(),
    st.sampled_from([0, 16]),
)
def test_ordering_of_mismatched_types_is_false(
    operator: str, operand: Any, value: Any, present: bool, compile_after: int
) -> None:
    rule = Rule.model_validate({"name": "r", "on": "**", "when": {"data.v": {operator: operand}}, "channels": ["c"]})
    index = RuleIndex([rule], compile_after=compile_after)
    data = {"v": value} if present else {}
    event = Event("a.b", "e", "s", datetime(2024, 1, 1, tzinfo=UTC), data)
    expected = present and _oracle(operator, value, operand)
    for _ in range(2):
        assert bool(index.match(event)) is expected, (operator, operand, value)


def test_a_path_with_a_huge_index_finds_nothing() -> None:
    # "data.a.<5000 digits>" once made int() raise while the index was built (not a ConfigError).
    huge = "9" * 5000
    rules = [
        Rule.model_validate(
            {"name": "r", "on": "**", "when": {f"data.a.{huge}": {"exists": False}}, "channels": ["c"]}
        ),
        Rule.model_validate({"name": "s", "on": "**", "when": {f"data.b.{huge}": {"eq": 1}}, "channels": ["c"]}),
    ]
    index = RuleIndex(rules, compile_after=0)
    event = Event("a.b", "e", "s", datetime(2024, 1, 1, tzinfo=UTC), {"a": [1, 2], "b": {huge: 1}})
    assert [rule.name for rule in index.match(event)] == ["r", "s"]  # a list has no such element; a dict may
