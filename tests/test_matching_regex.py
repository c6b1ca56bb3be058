"""`regex` conditions run in time linear in the event data (RE2), whatever the pattern.

The serve-level proof (other events keep flowing, under 100 ms) is in
tests/test_serve_hostile_content.py; this file pins the engine and its semantics.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from router.config.models import Rule
from router.core.events import Event
from router.matching.index import RuleIndex, naive_match
from router.support.linear_regex import RegexError, compile_linear, regex_problem
from tests.builders import make_event

CATASTROPHIC = r"^([a-zA-Z0-9._%+-]+)*@example\.com$"


def rule(name: str, when: dict[str, Any]) -> Rule:
    return Rule.model_validate({"name": name, "on": "**", "when": when, "channels": ["c"]})


def event(data: dict[str, Any]) -> Event:
    return make_event(data, id="e1", type="log.line", source="test", time=datetime(2024, 5, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    ("pattern", "text"),
    [
        ("error.*timeout", "error " * 100_000),  # 600 KB, no match: Python's re took 27 s on the loop
        (CATASTROPHIC, "a" * 40),  # 27 characters took Python's re 14.5 s; 40 never finished
        (CATASTROPHIC, "a" * 600_000),
    ],
)
def test_hostile_inputs_match_in_linear_time(pattern: str, text: str) -> None:
    index = RuleIndex([rule("r", {"data.message": {"regex": pattern}})])
    started = time.perf_counter()
    for _ in range(3):  # the second and later matches run the compiled plan
        assert index.match(event({"message": text})) == []
    assert (time.perf_counter() - started) / 3 < 0.1


def test_semantics_are_a_search_on_strings() -> None:
    rules = [rule("r", {"data.m": {"regex": "b+c"}})]
    index = RuleIndex(rules)
    for data, fires in [({"m": "abbcd"}, True), ({"m": "ac"}, False), ({"m": 5}, False), ({}, False)]:
        assert bool(index.match(event(data))) is fires
        assert bool(naive_match(rules, event(data))) is fires


def test_refusals_name_the_reason() -> None:
    assert regex_problem("error.*timeout") is None
    assert "invalid regular expression: missing )" in str(regex_problem("(a"))
    with pytest.raises(RegexError, match=r"linear-time regex engine \(RE2\): invalid escape sequence"):
        compile_linear(r"(a)\1")


def test_the_fast_search_path_is_in_use() -> None:
    # google-re2's public search builds match objects (about 10x slower on short strings).
    assert type(compile_linear("a+b")).__name__ == "_Search"


def test_lone_surrogates_from_json_do_not_break_matching() -> None:
    index = RuleIndex([rule("r", {"data.m": {"regex": "abc"}})])
    assert index.match(event({"m": "\ud800abc"})) != []
    assert index.match(event({"m": "\ud800xyz"})) == []


def test_unicode_text_matches() -> None:
    index = RuleIndex([rule("r", {"data.m": {"regex": "^Zoë .+ 東京$"}})])
    assert index.match(event({"m": "Zoë in 東京"})) != []
