"""Bad rules.yaml files: every problem is reported, located, and says what is wrong."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from router.config import load_config, load_config_text
from router.config.validate import issues_from_validation_error
from router.core.errors import ConfigError, Problem
from router.plugins.registry import Registry
from tests import config_plugins as plugins

CHANNELS = """\
channels:
  ops: {type: slack, url: "https://hooks.example/ops"}
  discord-general: {type: discord, url: "https://discord.example/1"}
  team-email: {type: email, url: "mailtos://smtp.example", to: [a@example.com]}
"""


@pytest.fixture
def registry() -> Registry:
    return plugins.make_registry()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    templates = tmp_path / "templates"
    templates.mkdir()
    for name in ("planet_completed.j2", "space_completed.j2", "signup.slack.j2"):
        (templates / name).write_text("{% block body %}x{% endblock %}")
    return tmp_path


def doc(body: str, *, channels: bool = True) -> str:
    """A rules.yaml text: the dedented ``body``, after the standard channels unless told otherwise."""
    return (CHANNELS if channels else "") + textwrap.dedent(body)


def problems_of(text: str, registry: Registry, folder: Path, env: dict[str, str] | None = None) -> list[Problem]:
    path = folder / "rules.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, registry, env=env or {})
    assert caught.value.problems, "a ConfigError must carry its problems"
    return caught.value.problems


def only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


def position(text: str, needle: str, occurrence: int = 0) -> tuple[int, int]:
    """1-based (line, column) of the start of ``needle`` in ``text``."""
    index = -1
    for _ in range(occurrence + 1):
        index = text.index(needle, index + 1)
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


# --- YAML syntax -----------------------------------------------------------------------------


def test_invalid_yaml_is_one_located_line(registry: Registry, folder: Path) -> None:
    text = "rules:\n  - name: a\n    on: [x, y\n  - name: b\n"
    problem = only(problems_of(text, registry, folder))

    rendered = str(problem)
    assert "\n" not in rendered
    assert re.match(rf"^{re.escape(str(folder / 'rules.yaml'))}:\d+:\d+: invalid YAML: ", rendered), rendered
    assert "expected ',' or ']'" in problem.message


def test_unclosed_quote_points_at_the_quote(registry: Registry, folder: Path) -> None:
    text = 'version: 1\nbroker: {url: "amqp://x}\n'
    problem = only(problems_of(text, registry, folder))
    assert problem.message.startswith("invalid YAML: found unexpected end of stream")
    assert "quoted scalar" in problem.message


def test_tabs_for_indentation(registry: Registry, folder: Path) -> None:
    problem = only(problems_of("rules:\n\t- name: a\n", registry, folder))
    assert (problem.line, problem.column) == (2, 1)
    assert "invalid YAML" in problem.message


def test_duplicate_keys(registry: Registry, folder: Path) -> None:
    text = textwrap.dedent(
        """\
    channels:
      ops: {type: slack, url: "https://hooks.example/1"}
      ops: {type: slack, url: "https://hooks.example/2"}
    rules: []
    """
    )
    problem = only(problems_of(text, registry, folder))
    assert str(problem).endswith("channels.ops: duplicate key (first defined at line 2, column 3)")
    assert (problem.line, problem.column) == (3, 3)


def test_top_level_must_be_a_mapping(registry: Registry, folder: Path) -> None:
    problem = only(problems_of("- name: a\n", registry, folder))
    assert problem.message.startswith("expected a mapping at the top level")
    assert problem.message.endswith("got a list")


def test_unsupported_tags_are_rejected(registry: Registry, folder: Path) -> None:
    problem = only(problems_of("templates: !!python/name:os.system x\n", registry, folder))
    assert "unsupported YAML tag" in problem.message
    assert problem.path == "templates"


def test_recursive_alias(registry: Registry, folder: Path) -> None:
    problems = problems_of("rules: &r [*r]\n", registry, folder)
    assert any("recursive alias" in p.message for p in problems)


def test_alias_bomb_is_refused(registry: Registry, folder: Path) -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    problem = only(problems_of("\n".join(lines) + "\n", registry, folder))
    assert "expands to more than" in problem.message


# --- structure -------------------------------------------------------------------------------


def test_unknown_key_suggests_the_closest(registry: Registry, folder: Path) -> None:
    text = doc(
        """\
    rules:
      - name: a
        on: planet.completed
        tempalte: planet_completed
        channels: [ops]
    """
    )
    problems = problems_of(text, registry, folder)
    unknown = [p for p in problems if p.path == "rules[0].tempalte"]
    assert len(unknown) == 1
    assert str(unknown[0]).endswith("rules[0].tempalte: unknown key; did you mean 'template'?")
    assert (unknown[0].line, unknown[0].column) == position(text, "tempalte")


def test_unknown_key_without_a_close_match_lists_the_keys(registry: Registry, folder: Path) -> None:
    problem = only(problems_of("broker: {zzz: 1}\n", registry, folder))
    assert problem.path == "broker.zzz"
    assert problem.message.startswith("unknown key (expected one of: url, exchange, queue")


def test_unknown_top_level_key(registry: Registry, folder: Path) -> None:
    problem = only(problems_of("rule: []\n", registry, folder))
    assert str(problem).endswith("rule: unknown key; did you mean 'rules'?")


def test_wrong_types_say_what_was_expected_without_the_value(registry: Registry, folder: Path) -> None:
    text = textwrap.dedent(
        """\
    defaults: {retry: {attempts: lots-of-them, backoff: soon-ish}}
    broker: {prefetch: [1, 2]}
    """
    )
    problems = problems_of(text, registry, folder)
    messages = {p.path: p.message for p in problems}
    assert messages == {
        "defaults.retry.attempts": "expected an integer, got a string",
        "defaults.retry.backoff": "expected a duration like '250ms', '2s', '5m', '24h' or '7d', got a string",
        "broker.prefetch": "expected an integer, got a list",
    }
    assert all("lots-of-them" not in str(p) and "soon-ish" not in str(p) for p in problems)


def test_bounds_and_literals(registry: Registry, folder: Path) -> None:
    text = "version: 2\nbroker: {prefetch: 0, queue_type: fancy}\n"
    messages = {p.path: p.message for p in problems_of(text, registry, folder)}
    assert messages == {
        "version": "expected 1",
        "broker.prefetch": "must be at least 1",
        "broker.queue_type": "expected 'classic' or 'quorum'",
    }


def test_missing_required_keys_point_at_the_mapping(registry: Registry, folder: Path) -> None:
    text = doc(
        """\
    rules:
      - template: planet_completed
        channels: [ops]
    """
    )
    problems = problems_of(text, registry, folder)
    assert {(p.path, p.message) for p in problems} == {
        ("rules[0]", "missing required key 'name'"),
        ("rules[0]", "missing required key 'on'"),
    }
    assert {(p.line, p.column) for p in problems} == {position(text, "template")}


def test_unknown_operator_points_at_the_operator(registry: Registry, folder: Path) -> None:
    text = doc(
        """\
    rules:
      - name: a
        on: planet.completed
        when: {data.planet.difficulty: {gtee: 3}}
        template: planet_completed
        channels: [ops]
    """
    )
    problem = only(problems_of(text, registry, folder))
    assert problem.path == "rules[0].when['data.planet.difficulty'].gtee"
    assert problem.message.startswith("unknown operator; did you mean 'gte'?")
    assert (problem.line, problem.column) == position(text, "gtee")


def test_every_problem_is_reported_at_once_in_file_order(registry: Registry, folder: Path) -> None:
    text = doc(
        """\
    version: 1
    defaults: {retry: {attempts: many}}
    rules:
      - name: first
        on: planet..completed
        template: planet_completed
        channels: [opps]
      - name: second
        on: space.completed
        template: space_completd
        channels: [ops]
        stopp: true
    """
    )
    problems = problems_of(text, registry, folder)

    assert [p.path for p in problems] == [
        "defaults.retry.attempts",
        "rules[0].on",
        "rules[0].channels[0]",
        "rules[1].template",
        "rules[1].stopp",
    ]
    lines = [p.line or 0 for p in problems]
    assert lines == sorted(lines)
    assert "5 problems in configuration" in str(ConfigError(problems))


# --- cross references ------------------------------------------------------------------------


def test_unknown_channel_suggests_a_configured_one(registry: Registry, folder: Path) -> None:
    text = doc(
        """\
    rules:
      - {name: a, on: x, template: planet_completed, channels: [ops, discord-generl]}
    """
    )
    problem = only(problems_of(text, registry, folder))
    assert str(problem).endswith(
        "rules[0].channels[1]: unknown channel 'discord-generl'; did you mean 'discord-general'?"
    )
    assert (problem.line, problem.column) == position(text, "discord-generl")


def test_unknown_channel_type(registry: Registry, folder: Path) -> None:
    text = 'channels:\n  chat: {type: discrod, url: "https://d.example"}\n'
    problem = only(problems_of(text, registry, folder))
    assert str(problem).endswith("channels.chat.type: unknown channel type 'discrod'; did you mean 'discord'?")
    assert (problem.line, problem.column) == position(text, "discrod")


def test_unknown_channel_type_without_close_match_lists_known(registry: Registry, folder: Path) -> None:
    problem = only(problems_of("channels:\n  x: {type: pager}\n", registry, folder))
    assert problem.message == "unknown channel type 'pager' (known: apprise, discord, email, slack)"


def test_bad_channel_options_are_located_at_the_option(registry: Registry, folder: Path) -> None:
    text = textwrap.dedent(
        """\
    channels:
      ops:
        type: slack
        url: "https://hooks.example"
        colour: red
        timeout: forever
      mail: {type: email, url: "mailtos://x", to: []}
    """
    )
    problems = problems_of(text, registry, folder)
    assert [(p.path, p.message, (p.line, p.column)) for p in problems] == [
        (
            "channels.ops.colour",
            f"unknown key (expected one of: {', '.join(plugins.WebhookConfig.model_fields)})",
            position(text, "colour"),
        ),
        (
            "channels.ops.timeout",
            "expected a duration like '250ms', '2s', '5m', '24h' or '7d', got a string",
            position(text, "forever"),
        ),
        ("channels.mail.to", "must not be empty", position(text, "[]")),
    ]


def test_unknown_job(registry: Registry, folder: Path) -> None:
    text = "rules:\n  - {name: a, on: x, job: audit.recrod, with: {table: t}}\n"
    problem = only(problems_of(text, registry, folder))
    assert str(problem).endswith("rules[0].job: unknown job 'audit.recrod'; did you mean 'audit.record'?")


def test_bad_with_is_validated_by_the_job_model(registry: Registry, folder: Path) -> None:
    text = textwrap.dedent(
        """\
    rules:
      - name: a
        on: x
        job: audit.record
        with: {tabel: events, retention_days: 0}
    """
    )
    problems = problems_of(text, registry, folder)
    assert [(p.path, p.message) for p in problems] == [
        ("rules[0].with", "missing required key 'table'"),
        ("rules[0].with.tabel", "unknown key; did you mean 'table'?"),
        ("rules[0].with.retention_days", "must be at least 1"),
    ]
    assert (problems[1].line, problems[1].column) == position(text, "tabel")


def test_notify_rule_needs_a_template(registry: Registry, folder: Path) -> None:
    text = f"{CHANNELS}rules:\n  - {{name: a, on: x, channels: [ops]}}\n"
    problem = only(problems_of(text, registry, folder))
    assert problem.path == "rules[0]"
    assert problem.message == "missing required key 'template' (the notify job renders it)"


def test_unknown_template_suggests_an_existing_one(registry: Registry, folder: Path) -> None:
    text = f"{CHANNELS}rules:\n  - {{name: a, on: x, template: planet_complete, channels: [ops]}}\n"
    problem = only(problems_of(text, registry, folder))
    assert problem.path == "rules[0].template"
    assert problem.message == (
        "template 'planet_complete' not found in templates/: expected planet_complete.j2, "
        "or planet_complete.<type>.j2 for every channel type of the rule "
        "(missing: planet_complete.slack.j2); did you mean 'planet_completed'?"
    )


def test_channel_specific_template_must_exist_for_every_channel_type(registry: Registry, folder: Path) -> None:
    text = f"{CHANNELS}rules:\n  - {{name: a, on: x, template: signup, channels: [ops, discord-general]}}\n"
    problem = only(problems_of(text, registry, folder))
    assert "(missing: signup.discord.j2)" in problem.message


def test_missing_templates_folder(registry: Registry, folder: Path) -> None:
    text = f"templates: nowhere\n{CHANNELS}rules:\n  - {{name: a, on: x, template: t, channels: [ops]}}\n"
    problem = only(problems_of(text, registry, folder))
    assert problem.message == (
        "template 't' not found: the templates folder 'nowhere' does not exist"
        f" ({folder / 'nowhere'}; a relative folder is relative to rules.yaml)"
    )


def test_template_names_cannot_escape_the_folder(registry: Registry, folder: Path) -> None:
    text = f"{CHANNELS}rules:\n  - {{name: a, on: x, template: ../secret, channels: [ops]}}\n"
    problem = only(problems_of(text, registry, folder))
    assert "may not contain '..'" in problem.message


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("planet..completed", "empty segment"),
        (".planet", "empty segment"),
        ("planet.", "empty segment"),
        ("planet.comp*", "must be whole segments"),
        ("***", "must be whole segments"),
        ("planet.**x", "must be whole segments"),
    ],
)
def test_bad_patterns(registry: Registry, folder: Path, pattern: str, reason: str) -> None:
    text = (
        f"{CHANNELS}rules:\n  - {{name: a, on: ['ok.*', '{pattern}'], template: planet_completed, channels: [ops]}}\n"
    )
    problem = only(problems_of(text, registry, folder))
    assert problem.path == "rules[0].on[1]"
    assert reason in problem.message


def test_good_patterns_load(registry: Registry, folder: Path) -> None:
    text = f"{CHANNELS}rules:\n  - {{name: a, on: ['**', '*', 'a.*.c', 'a.**', '**.done'], template: planet_completed, channels: [ops]}}\n"
    (folder / "rules.yaml").write_text(text)
    assert load_config(folder / "rules.yaml", registry, env={}).config.rules[0].on[0] == "**"


def test_bad_regex_shows_the_regex_error(registry: Registry, folder: Path) -> None:
    text = doc(
        """\
    rules:
      - name: a
        on: x
        when:
          data.name: {regex: "([a-z]+"}
        template: planet_completed
        channels: [ops]
    """
    )
    problem = only(problems_of(text, registry, folder))
    assert problem.path == "rules[0].when['data.name'].regex"
    assert problem.message == "invalid regular expression: missing ), unterminated subpattern at position 0"
    assert (problem.line, problem.column) == position(text, '"([a-z]+"')


def test_operand_types(registry: Registry, folder: Path) -> None:
    text = doc(
        """\
    rules:
      - name: a
        on: x
        when: {data.tier: {in: gold}, data.id: {exists: maybe}}
        template: planet_completed
        channels: [ops]
    """
    )
    messages = {p.path: p.message for p in problems_of(text, registry, folder)}
    assert messages == {
        "rules[0].when['data.tier'].in": "'in' expects a list, got a string",
        "rules[0].when['data.id'].exists": "'exists' expects true or false, got a string",
    }


def test_duplicate_rule_names(registry: Registry, folder: Path) -> None:
    text = doc(
        """\
    rules:
      - {name: same, on: x, template: planet_completed, channels: [ops]}
      - {name: same, on: y, template: planet_completed, channels: [ops]}
    """
    )
    problem = only(problems_of(text, registry, folder))
    assert str(problem).endswith("rules[1].name: duplicate rule name 'same' (also used by rules[0])")
    assert (problem.line, problem.column) == position(text, "same", occurrence=1)


def test_bad_dedupe_key_template(registry: Registry, folder: Path) -> None:
    text = f"{CHANNELS}rules:\n  - {{name: a, on: x, template: planet_completed, channels: [ops], dedupe: {{key: '{{{{ data.id', window: 1h}}}}\n"
    problem = only(problems_of(text, registry, folder))
    assert problem.path == "rules[0].dedupe.key"
    assert problem.message.startswith("invalid template expression: ")


def test_references_are_checked_even_when_the_rule_has_other_errors(registry: Registry, folder: Path) -> None:
    text = f"{CHANNELS}rules:\n  - {{name: a, on: 'a..b', template: planet_completed, channels: [nope], colour: red}}\n"
    paths = {p.path for p in problems_of(text, registry, folder)}
    assert paths == {"rules[0].on", "rules[0].channels[0]", "rules[0].colour"}


def test_text_errors_use_the_given_filename(registry: Registry) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text("rules: 5\n", registry, filename="inline.yaml", env={})
    assert str(only(caught.value.problems)) == "inline.yaml:1:8: rules: expected a list, got an integer"


# --- line and column -------------------------------------------------------------------------


def test_line_and_column_for_block_and_flow_styles(registry: Registry, folder: Path) -> None:
    text = textwrap.dedent(
        """\
    # a comment line
    broker:
      url: ""
      prefetch: "lots"
    state: {url: "sqlite:///x.db", idempotency_window: "a while"}
    """
    )
    problems = problems_of(text, registry, folder)
    located = {p.path: (p.line, p.column) for p in problems}
    assert located == {
        "broker.prefetch": position(text, '"lots"'),
        "state.idempotency_window": position(text, '"a while"'),
    }
    assert located["broker.prefetch"] == (4, 13)


def test_union_alternatives_are_folded_into_one_message() -> None:
    class Options(BaseModel):
        to: str | list[str]

    data = {"to": 5}
    with pytest.raises(ValidationError) as caught:
        Options.model_validate(data)
    issues = issues_from_validation_error(caught.value, Options, data, ("channels", "mail"))
    assert [(i.path, i.message) for i in issues] == [
        (("channels", "mail", "to"), "expected a string or a list, got an integer")
    ]


RE2_REFUSALS = [
    (r"^(\\w+)\\1$", r"invalid escape sequence: \1"),
    ("(?<=a)b", "invalid perl operator: (?<="),
    ("a(?!b)", "invalid perl operator: (?!"),
    ("a++", "bad repetition operator: ++"),
]
"""Patterns the linear-time engine refuses, and the construct its refusal names."""


@pytest.mark.parametrize(("pattern", "construct"), RE2_REFUSALS)
def test_a_regex_the_linear_engine_cannot_take_is_refused_where_written(
    registry: Registry, folder: Path, pattern: str, construct: str
) -> None:
    # Conditions run on publisher-controlled data: backtracking constructs are refused, not risked.
    text = doc(
        f"""\
    rules:
      - name: a
        on: x
        when:
          data.name: {{regex: "{pattern}"}}
        template: planet_completed
        channels: [ops]
    """
    )
    problem = only(problems_of(text, registry, folder))
    assert problem.path == "rules[0].when['data.name'].regex"
    assert problem.message.startswith(f"not supported by the linear-time regex engine (RE2): {construct};")
    assert "backreferences, lookahead/lookbehind" in problem.message
    assert (problem.line, problem.column) == position(text, f'"{pattern}"')


@pytest.mark.parametrize(("pattern", "construct"), RE2_REFUSALS)
def test_an_event_schema_pattern_the_linear_engine_cannot_take_is_refused_where_written(
    registry: Registry, folder: Path, pattern: str, construct: str
) -> None:
    # Schema patterns run on publisher data too (router/config/schema_regex.py): the same engine, the same refusal.
    text = doc(
        f"""\
    events:
      user.signed_up:
        email: {{schema: {{type: string, pattern: "{pattern}"}}}}
        profile:
          schema:
            type: object
            patternProperties: {{"{pattern}": {{type: string}}}}
    rules:
      - {{name: a, on: user.signed_up, template: planet_completed, channels: [ops]}}
    """
    )
    problems = problems_of(text, registry, folder)
    assert len(problems) == 2, [str(p) for p in problems]
    assert problems[0].path == "events['user.signed_up'].email.schema.pattern"
    assert problems[1].path.startswith("events['user.signed_up'].profile.schema.patternProperties[")
    for problem in problems:
        assert problem.message.startswith(f"not supported by the linear-time regex engine (RE2): {construct};")
    assert (problems[0].line, problems[0].column) == position(text, f'"{pattern}"')
    assert (problems[1].line, problems[1].column) == position(text, f'"{pattern}"', occurrence=1)
