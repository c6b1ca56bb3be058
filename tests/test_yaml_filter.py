"""The `yaml` filter: any value from data becomes exactly one YAML value, whatever characters it holds."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from router.templating.filters import to_yaml

LOADERS = [yaml.SafeLoader, getattr(yaml, "CSafeLoader", yaml.SafeLoader)]

# Text without half surrogate pairs (no character: they become U+FFFD, tested below).
text = st.text(st.characters(exclude_categories=["Cs"]))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)


@pytest.mark.parametrize("loader", LOADERS)
@settings(max_examples=300, deadline=None)
@given(value=json_values)
def test_any_value_reads_back_as_itself_inside_a_mapping_and_a_list(loader: Any, value: Any) -> None:
    text = to_yaml(value)
    assert len(text.splitlines()) == 1  # one line (for every line break YAML knows): indentation stays
    document = f"embeds:\n  - title: {text}\n    fields: [{{name: n, value: {text}}}]\n"
    assert yaml.load(document, Loader=loader) == {
        "embeds": [{"title": value, "fields": [{"name": "n", "value": value}]}]
    }


@pytest.mark.parametrize(
    "value",
    ["\x00\x07\x1b", "\x7f\x80\x85\x9f", "\u2028\u2029", "\ufeff\ufffe\uffff", "🪐\U0010ffff"],
)
def test_characters_yaml_refuses_raw_are_escaped(value: str) -> None:
    for loader in LOADERS:
        assert yaml.load(f"k: {to_yaml(value)}", Loader=loader) == {"k": value}


def test_half_a_surrogate_pair_becomes_the_replacement_character() -> None:
    written = to_yaml("a\ud800b")
    for loader in LOADERS:
        assert yaml.load(f"k: {written}", Loader=loader) == {"k": "a\ufffdb"}


def test_values_without_a_json_form_are_errors() -> None:
    with pytest.raises(ValueError, match="NaN and infinity"):
        to_yaml(float("inf"))
