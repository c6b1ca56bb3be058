"""Properties of matching: the compiled rule index against the plain scan, on any input.

Whatever the event carries, matching never raises: a condition whose operand and value do not
fit is simply false (README "Conditions"). A rule set is either accepted whole or rejected at
load with located problems (an invalid regex is a config error, never a runtime one). On any
rules and events the index (grouped plans, generated code, its cache) fires exactly what the
plain scan fires, and ``on:`` patterns compile to what the reference matcher says.

Two input worlds: arbitrary data and operands (robustness), and a tiny alphabet where
patterns, types and values meet often so most rules are candidates and plans group them.
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
from router.core.patterns import compile_pattern, pattern_matches
from router.matching.index import RuleIndex, naive_match
from tests.builders import make_event

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
    return make_event(
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


def assert_agrees_with_the_plain_scan(rules: list[Rule], event_list: list[Event], indexes: list[RuleIndex]) -> None:
    """Every index fires exactly what the plain scan fires on each event, in order; so does `router test --explain`.

    Pass an event twice to match it again on the cached (and, by then, compiled) plans.
    """
    for event in event_list:
        expected = naive_match(rules, event)
        for index in indexes:
            assert index.match(event) == expected
        assert [v.rule for v in indexes[0].explain(event) if v.fired] == expected


@SETTINGS
@given(rule_sets(), st.lists(events(), min_size=1, max_size=6))
def test_matching_never_raises_and_agrees_with_the_plain_scan(rules: list[Rule], event_list: list[Event]) -> None:
    try:
        indexes = [RuleIndex(rules, min_group=1, compile_after=n) for n in (0, 1000)]
    except ConfigError as error:
        assert error.problems and all(p.path.startswith("rules[") for p in error.problems)
        return
    assert not _invalid_regex(rules), "an invalid regex must be rejected when the rules are loaded"
    assert_agrees_with_the_plain_scan(rules, event_list + event_list, indexes)  # the second pass: cached plans


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
    event = make_event(data, type="a.b", id="e", source="s", time=datetime(2024, 1, 1, tzinfo=UTC))
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
    event = make_event(
        {"a": [1, 2], "b": {huge: 1}}, type="a.b", id="e", source="s", time=datetime(2024, 1, 1, tzinfo=UTC)
    )
    assert [rule.name for rule in index.match(event)] == ["r", "s"]  # a list has no such element; a dict may


# -- a small world: a tiny alphabet where patterns, types and values meet often -------------

# Strategies are built once, at import: building them inside composites dominated run time.


def dotted(alphabet: list[str], max_size: int) -> st.SearchStrategy[str]:
    """Names of 1..max_size segments, each separated by '.' or '/' (both are segment boundaries)."""
    parts = st.lists(st.tuples(st.sampled_from([".", "/"]), st.sampled_from(alphabet)), min_size=1, max_size=max_size)
    return parts.map(lambda drawn: drawn[0][1] + "".join(separator + segment for separator, segment in drawn[1:]))


# A tiny alphabet makes patterns and types meet often, so most rules are candidates.
small_patterns = dotted(["a", "b", "*", "**"], 3)
event_types = dotted(["a", "b"], 3)

# Fixed value pools: cheap to draw, and small enough that equal values are common.
SMALL_SCALARS: list[Any] = [0, 1, 1.0, 2, -1.5, True, False, None, "a", "b", "ab", ""]
SMALL_CONTAINERS: list[Any] = [[], [1], [True], ["a", 1.0], [[1]], {}, {"k": 1}, {"a": None}]
values = st.sampled_from(SMALL_SCALARS + SMALL_CONTAINERS)
keyed = st.sampled_from([1, True, "a", None, 1.0])  # what indexable eq/in conditions test (1.0 keys as 1)
ordered = st.sampled_from([0, 1, 1.5, "a", "b"])

SMALL_OPERANDS: dict[str, st.SearchStrategy[Any]] = {
    "eq": st.one_of(keyed, values),
    "ne": values,
    "lt": ordered,
    "lte": ordered,
    "gt": ordered,
    "gte": ordered,
    "in": st.lists(st.one_of(keyed, values), max_size=3),
    "not_in": st.lists(values, max_size=3),
    "regex": st.sampled_from(["^a", "b$", ".", "^$", "a|b"]),
    "contains": st.sampled_from([*SMALL_SCALARS, "k", [1]]),
    "exists": st.booleans(),
}
SMALL_PATHS = ["data.x", "data.y", "data.l", "data.n.m", "data.l.0", "subject", "headers.h", "type"]
operator_sets = st.lists(st.sampled_from(sorted(SMALL_OPERANDS)), min_size=1, max_size=2, unique=True)


@st.composite
def small_conditions(draw: st.DrawFn) -> dict[str, Any]:
    return {op: draw(SMALL_OPERANDS[op]) for op in draw(operator_sets)}


random_whens = st.dictionaries(st.sampled_from(SMALL_PATHS), small_conditions(), max_size=2)
# Most rules of a large config select on one field, like a tenant: the shape plans index.
tenant_conditions = st.one_of(keyed.map(lambda v: {"eq": v}), st.lists(keyed, max_size=3).map(lambda v: {"in": v}))
tenant_whens = st.tuples(random_whens, tenant_conditions).map(lambda pair: {**pair[0], "data.x": pair[1]})
whens = st.one_of(st.just({}), random_whens, tenant_whens, tenant_whens)
ons = st.lists(small_patterns, min_size=1, max_size=2)
stops = st.sampled_from([False, False, False, True])


@st.composite
def small_rules(draw: st.DrawFn) -> list[Rule]:
    count = draw(st.integers(min_value=0, max_value=10))
    return [
        Rule.model_validate(
            {"name": f"r{i}", "on": draw(ons), "when": draw(whens), "channels": ["c"], "stop": draw(stops)}
        )
        for i in range(count)
    ]


x_values = st.one_of(keyed, keyed, values)
present = st.integers(0, 4)  # a field is present four times in five
subjects = st.sampled_from([None, "a", "ab", ""])
headers: st.SearchStrategy[dict[str, Any]] = st.sampled_from([{}, {"h": "a"}, {"h": 1}])


@st.composite
def small_events(draw: st.DrawFn) -> Event:
    data: dict[str, Any] = {}
    for key, pool in (("x", x_values), ("y", values), ("l", values), ("n", values)):
        if draw(present):
            data[key] = draw(pool)
    if draw(st.booleans()):
        data["n"] = {"m": draw(values)}
    return make_event(
        type=draw(event_types),
        id="e",
        source="svc",
        time=datetime(2024, 5, 1, tzinfo=UTC),
        data=data,
        subject=draw(subjects),
        headers=draw(headers),
    )


@settings(max_examples=200, deadline=None)
@given(small_rules(), st.lists(small_events(), min_size=1, max_size=8), st.sampled_from([1, 2, 3]))
def test_index_agrees_with_the_plain_scan(rule_list: list[Rule], event_list: list[Event], min_group: int) -> None:
    # min_group=1 indexes every eq/in path it can. compile_after=0 generates each plan's code
    # at once, 2 after two events of its type, 1000 never. A tiny cache makes plans rebuilt.
    indexes = [RuleIndex(rule_list, min_group=min_group, cache_size=3, compile_after=n) for n in (0, 2, 1000)]
    assert_agrees_with_the_plain_scan(rule_list, event_list + event_list[:2], indexes)


# Routing-shaped configs: rules that only select on data.x (grouped by plans) or on nothing
# (always fire), many of them ``stop``; this is where merging and stopping go wrong if they do.
routing_rules = st.lists(
    st.tuples(ons, st.one_of(st.just({}), tenant_conditions.map(lambda c: {"data.x": c})), st.booleans()),
    max_size=10,
).map(
    lambda drawn: [
        Rule.model_validate({"name": f"r{i}", "on": on, "when": when, "channels": ["c"], "stop": stop})
        for i, (on, when, stop) in enumerate(drawn)
    ]
)
routing_events = st.builds(
    lambda event_type, x: make_event(
        {"x": x}, type=event_type, id="e", source="s", time=datetime(2024, 5, 1, tzinfo=UTC)
    ),
    event_types,
    keyed,
)


@settings(max_examples=200, deadline=None)
@given(routing_rules, st.lists(routing_events, min_size=1, max_size=8), st.sampled_from([1, 2]))
def test_grouped_rules_fire_in_order_and_stop(rule_list: list[Rule], event_list: list[Event], min_group: int) -> None:
    indexes = [RuleIndex(rule_list, min_group=min_group, compile_after=n) for n in (0, 1000)]
    assert_agrees_with_the_plain_scan(rule_list, event_list, indexes)


@settings(max_examples=200, deadline=None)
@given(dotted(["a", "b", "c", "*", "**"], 5), dotted(["a", "b", "c"], 5))
def test_compiled_pattern_agrees_with_reference(pattern: str, event_type: str) -> None:
    expected = pattern_matches(pattern, event_type)
    assert compile_pattern(pattern)(event_type) is expected
    index = RuleIndex([Rule.model_validate({"name": "r", "on": pattern, "channels": ["c"]})])
    assert (
        bool(index.match(make_event(type=event_type, id="e", source="s", time=datetime(2024, 1, 1, tzinfo=UTC))))
        is expected
    )


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["a", "b"]), dotted(["a", "b", "c"], 4))
def test_a_domain_glob_takes_every_type_of_that_domain(domain: str, event_type: str) -> None:
    # `on: "<domain>/**"` takes the domain itself and every `<domain>/...` type, and nothing else.
    index = RuleIndex([Rule.model_validate({"name": "r", "on": f"{domain}/**", "channels": ["c"]})])
    event = make_event(type=event_type, id="e", source="s", time=datetime(2024, 1, 1, tzinfo=UTC))
    expected = event_type == domain or event_type.startswith(domain + "/")
    assert bool(index.match(event)) is expected
    assert pattern_matches(f"{domain}/**", event_type) is expected
