"""Property: on any rules and events, the compiled index fires exactly what the plain scan fires."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from router.config.models import Rule
from router.core.events import Event
from router.core.patterns import compile_pattern, pattern_matches
from router.matching.index import RuleIndex, naive_match

# Strategies are built once, at import: building them inside composites dominated run time.


def dotted(alphabet: list[str], max_size: int) -> st.SearchStrategy[str]:
    """Names of 1..max_size segments, each separated by '.' or '/' (both are segment boundaries)."""
    parts = st.lists(st.tuples(st.sampled_from([".", "/"]), st.sampled_from(alphabet)), min_size=1, max_size=max_size)
    return parts.map(lambda drawn: drawn[0][1] + "".join(separator + segment for separator, segment in drawn[1:]))


# A tiny alphabet makes patterns and types meet often, so most rules are candidates.
patterns = dotted(["a", "b", "*", "**"], 3)
event_types = dotted(["a", "b"], 3)

# Fixed value pools: cheap to draw, and small enough that equal values are common.
SCALARS: list[Any] = [0, 1, 1.0, 2, -1.5, True, False, None, "a", "b", "ab", ""]
CONTAINERS: list[Any] = [[], [1], [True], ["a", 1.0], [[1]], {}, {"k": 1}, {"a": None}]
values = st.sampled_from(SCALARS + CONTAINERS)
keyed = st.sampled_from([1, True, "a", None, 1.0])  # what indexable eq/in conditions test (1.0 keys as 1)
ordered = st.sampled_from([0, 1, 1.5, "a", "b"])

OPERANDS: dict[str, st.SearchStrategy[Any]] = {
    "eq": st.one_of(keyed, values),
    "ne": values,
    "lt": ordered,
    "lte": ordered,
    "gt": ordered,
    "gte": ordered,
    "in": st.lists(st.one_of(keyed, values), max_size=3),
    "not_in": st.lists(values, max_size=3),
    "regex": st.sampled_from(["^a", "b$", ".", "^$", "a|b"]),
    "contains": st.sampled_from([*SCALARS, "k", [1]]),
    "exists": st.booleans(),
}
PATHS = ["data.x", "data.y", "data.l", "data.n.m", "data.l.0", "subject", "headers.h", "type"]
operator_sets = st.lists(st.sampled_from(sorted(OPERANDS)), min_size=1, max_size=2, unique=True)


@st.composite
def conditions(draw: st.DrawFn) -> dict[str, Any]:
    return {op: draw(OPERANDS[op]) for op in draw(operator_sets)}


random_whens = st.dictionaries(st.sampled_from(PATHS), conditions(), max_size=2)
# Most rules of a large config select on one field, like a tenant: the shape plans index.
tenant_conditions = st.one_of(keyed.map(lambda v: {"eq": v}), st.lists(keyed, max_size=3).map(lambda v: {"in": v}))
tenant_whens = st.tuples(random_whens, tenant_conditions).map(lambda pair: {**pair[0], "data.x": pair[1]})
whens = st.one_of(st.just({}), random_whens, tenant_whens, tenant_whens)
ons = st.lists(patterns, min_size=1, max_size=2)
stops = st.sampled_from([False, False, False, True])


@st.composite
def rules(draw: st.DrawFn) -> list[Rule]:
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
def events(draw: st.DrawFn) -> Event:
    data: dict[str, Any] = {}
    for key, pool in (("x", x_values), ("y", values), ("l", values), ("n", values)):
        if draw(present):
            data[key] = draw(pool)
    if draw(st.booleans()):
        data["n"] = {"m": draw(values)}
    return Event(
        type=draw(event_types),
        id="e",
        source="svc",
        time=datetime(2024, 5, 1, tzinfo=UTC),
        data=data,
        subject=draw(subjects),
        headers=draw(headers),
    )


@settings(max_examples=200, deadline=None)
@given(rules(), st.lists(events(), min_size=1, max_size=8), st.sampled_from([1, 2, 3]))
def test_index_agrees_with_the_plain_scan(rule_list: list[Rule], event_list: list[Event], min_group: int) -> None:
    # min_group=1 indexes every eq/in path it can. compile_after=0 generates each plan's code
    # at once, 2 after two events of its type, 1000 never. A tiny cache makes plans rebuilt.
    indexes = [RuleIndex(rule_list, min_group=min_group, cache_size=3, compile_after=n) for n in (0, 2, 1000)]
    for event in event_list + event_list[:2]:
        expected = naive_match(rule_list, event)
        for index in indexes:
            assert index.match(event) == expected
        assert [v.rule for v in indexes[0].explain(event) if v.fired] == expected


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
    lambda event_type, x: Event(event_type, "e", "s", datetime(2024, 5, 1, tzinfo=UTC), {"x": x}),
    event_types,
    keyed,
)


@settings(max_examples=200, deadline=None)
@given(routing_rules, st.lists(routing_events, min_size=1, max_size=8), st.sampled_from([1, 2]))
def test_grouped_rules_fire_in_order_and_stop(rule_list: list[Rule], event_list: list[Event], min_group: int) -> None:
    indexes = [RuleIndex(rule_list, min_group=min_group, compile_after=n) for n in (0, 1000)]
    for event in event_list:
        expected = naive_match(rule_list, event)
        for index in indexes:
            assert index.match(event) == expected


@settings(max_examples=200, deadline=None)
@given(dotted(["a", "b", "c", "*", "**"], 5), dotted(["a", "b", "c"], 5))
def test_compiled_pattern_agrees_with_reference(pattern: str, event_type: str) -> None:
    expected = pattern_matches(pattern, event_type)
    assert compile_pattern(pattern)(event_type) is expected
    index = RuleIndex([Rule.model_validate({"name": "r", "on": pattern, "channels": ["c"]})])
    assert bool(index.match(Event(event_type, "e", "s", datetime(2024, 1, 1, tzinfo=UTC), {}))) is expected


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["a", "b"]), dotted(["a", "b", "c"], 4))
def test_a_domain_glob_takes_every_type_of_that_domain(domain: str, event_type: str) -> None:
    # `on: "<domain>/**"` takes the domain itself and every `<domain>/...` type, and nothing else.
    index = RuleIndex([Rule.model_validate({"name": "r", "on": f"{domain}/**", "channels": ["c"]})])
    event = Event(event_type, "e", "s", datetime(2024, 1, 1, tzinfo=UTC), {})
    expected = event_type == domain or event_type.startswith(domain + "/")
    assert bool(index.match(event)) is expected
    assert pattern_matches(f"{domain}/**", event_type) is expected
