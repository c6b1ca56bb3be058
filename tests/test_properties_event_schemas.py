"""Properties of the compact event schema form: whatever well-formed spec is written, it compiles
to a schema jsonschema accepts, and data shaped like the spec passes it."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from router.config.event_schemas import SpecProblem, compile_event

Pair = tuple[Any, Any]  # (a compact spec, a value that conforms to it)

VALUES: dict[str, st.SearchStrategy[Any]] = {
    "string": st.text(max_size=4),
    "integer": st.integers(),
    "number": st.integers() | st.floats(allow_nan=False, allow_infinity=False),
    "boolean": st.booleans(),
    "object": st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    "array": st.lists(st.integers(), max_size=2),
    "null": st.none(),
    "any": st.none() | st.integers() | st.text(max_size=3) | st.lists(st.booleans(), max_size=2),
}

NAMES = st.from_regex(r"[a-z][a-zA-Z0-9_]{0,6}", fullmatch=True).filter(lambda name: name != "schema")


def scalars() -> st.SearchStrategy[Pair]:
    return st.sampled_from(sorted(VALUES)).flatmap(lambda name: st.tuples(st.just(name), VALUES[name]))


def type_expressions(items: st.SearchStrategy[Pair]) -> st.SearchStrategy[Pair]:
    """``A | list[B] | [C]``: the value conforms to one of the members."""
    lists = items.flatmap(
        lambda item: st.sampled_from([f"list[{item[0]}]", f"[ {item[0]} ]"]).map(lambda text: (text, [item[1]]))
    )
    atom = scalars() | lists
    return st.lists(atom, min_size=1, max_size=3).flatmap(
        lambda atoms: st.sampled_from(atoms).map(lambda chosen: (" | ".join(a[0] for a in atoms), chosen[1]))
    )


def expressions() -> st.SearchStrategy[Pair]:
    return st.recursive(scalars(), type_expressions, max_leaves=6)


def mappings(fields: st.SearchStrategy[Pair], *, may_be_null: bool = True) -> st.SearchStrategy[Pair]:
    entries = st.dictionaries(NAMES, st.tuples(st.booleans(), st.booleans(), fields), max_size=4)

    def build(chosen: dict[str, tuple[bool, bool, Pair]], nullable: bool, strict: bool, null: bool) -> Pair:
        spec: dict[str, Any] = {}
        value: dict[str, Any] = {}
        for name, (optional, present, (field_spec, field_value)) in chosen.items():
            spec[name + ("?" if optional else "")] = field_spec
            if present or not optional:
                value[name] = field_value
        if nullable:
            spec["$nullable"] = True
        if strict:
            spec["$strict"] = True
        return spec, None if nullable and null else value

    nullable = st.booleans() if may_be_null else st.just(False)  # an event's data is always an object
    return st.builds(build, entries, nullable, st.booleans(), st.booleans())


def fields() -> st.SearchStrategy[Pair]:
    return st.recursive(
        expressions(),
        lambda inner: inner.map(lambda pair: ([pair[0]], [pair[1]])) | mappings(inner),
        max_leaves=8,
    )


@settings(max_examples=150, deadline=None)
@given(mappings(fields(), may_be_null=False))
def test_any_well_formed_spec_compiles_to_a_valid_schema_that_accepts_conforming_data(pair: Pair) -> None:
    spec, value = pair
    problems: list[SpecProblem] = []
    schema = compile_event("t", spec, problems)
    assert problems == []
    assert schema is not None
    Draft202012Validator.check_schema(schema.schema)
    assert schema.check(value) is None


@settings(max_examples=100, deadline=None)
@given(expressions())
def test_a_required_field_of_the_wrong_type_is_refused_with_its_path(pair: Pair) -> None:
    spec, _ = pair
    problems: list[SpecProblem] = []
    schema = compile_event("t", {"f": spec, "g": "string"}, problems)
    assert problems == [] and schema is not None
    message = schema.check({"f": None, "g": 5})
    assert message is not None
    assert "data.g: expected string, got integer" in message
