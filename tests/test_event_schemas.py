"""Event schemas (`events:` in rules.yaml): compiling, located config errors, validation messages,
the engine refusing events that fail their schema, and `router test` / `router schema`."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from jsonschema import Draft202012Validator

from router.cli import cli
from router.config import load_config_text
from router.config.event_schemas import EventSchema, SpecProblem, compile_event, compile_events
from router.core.errors import ConfigError
from tests.builders import event_bytes, event_object
from tests.engine_support import Harness, RecorderChannel, start_harness, until
from tests.engine_support import test_registry as make_registry


def compiled(spec: Any) -> dict[str, Any]:
    problems: list[SpecProblem] = []
    schema = compile_event("t", spec, problems)
    assert problems == [] and schema is not None
    return schema.schema


def field(spec: Any) -> dict[str, Any]:
    """The JSON Schema the compact form ``spec`` compiles to, as the field ``f`` of an event."""
    return compiled({"f": spec})["properties"]["f"]  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------------
# compact form -> JSON Schema


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("string", {"type": "string"}),
        ("integer", {"type": "integer"}),
        ("number", {"type": "number"}),
        ("boolean", {"type": "boolean"}),
        ("object", {"type": "object"}),
        ("array", {"type": "array"}),
        ("any", {}),
        ("string | null", {"type": ["string", "null"]}),
        ("string|integer|null", {"type": ["string", "integer", "null"]}),
        ("any | null", {}),
        ("string | string", {"type": "string"}),
        ("list[string]", {"type": "array", "items": {"type": "string"}}),
        ("[integer]", {"type": "array", "items": {"type": "integer"}}),
        (["string"], {"type": "array", "items": {"type": "string"}}),
        ("list[list[number]]", {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}),
        ("list[string] | null", {"type": ["array", "null"], "items": {"type": "string"}}),
        ("list[string | null]", {"type": "array", "items": {"type": ["string", "null"]}}),
        (
            "list[string] | list[integer]",
            {
                "anyOf": [
                    {"type": "array", "items": {"type": "string"}},
                    {"type": "array", "items": {"type": "integer"}},
                ]
            },
        ),
        (
            [{"id": "string", "qty?": "integer"}],
            {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"id": {"type": "string"}, "qty": {"type": "integer"}},
                    "required": ["id"],
                },
            },
        ),
        (
            {"name": "string", "avatar": {"image?": "string"}},
            {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "avatar": {"type": "object", "properties": {"image": {"type": "string"}}},
                },
                "required": ["name", "avatar"],
            },
        ),
        (
            {"name": "string", "$nullable": True},
            {"type": ["object", "null"], "properties": {"name": {"type": "string"}}, "required": ["name"]},
        ),
        (
            {"name": "string", "$strict": True},
            {
                "type": "object",
                "properties": {"name": {"type": "string"}},
                "required": ["name"],
                "additionalProperties": False,
            },
        ),
        ({}, {"type": "object", "properties": {}}),
        ({"schema": {"type": "string", "minLength": 1}}, {"type": "string", "minLength": 1}),
    ],
)
def test_compact_field_compiles_to_json_schema(spec: Any, expected: dict[str, Any]) -> None:
    assert field(spec) == expected
    Draft202012Validator.check_schema(field(spec))


def test_event_fields_are_required_unless_the_key_ends_with_a_question_mark() -> None:
    assert compiled({"recipientEmail": "string", "subject?": "string", "isClosed?": "boolean"}) == {
        "type": "object",
        "properties": {
            "recipientEmail": {"type": "string"},
            "subject": {"type": "string"},
            "isClosed": {"type": "boolean"},
        },
        "required": ["recipientEmail"],
    }


def test_extra_fields_are_allowed_unless_strict() -> None:
    schemas, problems = compile_events({"open": {"a": "string"}, "closed": {"a": "string", "$strict": True}})
    assert problems == []
    assert schemas["open"].check({"a": "x", "added": 1}) is None
    assert (
        schemas["closed"].check({"a": "x", "added": 1})
        == "data.added: not declared (the schema allows no other fields)"
    )


def test_escape_hatch_is_the_users_json_schema_as_written() -> None:
    raw = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}, "required": ["n"]}
    schemas, problems = compile_events({"raw.thing": {"schema": raw}})
    assert problems == []
    assert schemas["raw.thing"].schema == raw
    assert schemas["raw.thing"].check({"n": 2}) is None
    assert schemas["raw.thing"].check({"n": 0}) == "data.n: fails 'minimum' (1)"


def test_a_field_named_schema_with_a_type_is_an_ordinary_field() -> None:
    assert compiled({"schema": "string"})["properties"] == {"schema": {"type": "string"}}


# ---------------------------------------------------------------------------------------------
# validation messages: every failing path, types only, never a value


def test_message_lists_every_failing_path_without_values() -> None:
    schemas, _ = compile_events(
        {"planet.completed": {"userSlug": "string", "userName": "string", "planetName": "string", "tags": ["string"]}}
    )
    message = schemas["planet.completed"].check(
        {"userSlug": "s3cr3t-value", "planetName": 12345, "tags": ["ok", 987654]}
    )
    assert message == (
        "data.planetName: expected string, got integer; "
        "data.tags[1]: expected string, got integer; "
        "data.userName: required property missing"
    )
    assert "s3cr3t" not in message and "12345" not in message and "987654" not in message


def test_message_for_nested_nullable_and_union_fields() -> None:
    schemas, _ = compile_events(
        {"challenge.posted": {"author": {"id": "string", "entity?": {"name": "string", "$nullable": True}}}}
    )
    schema = schemas["challenge.posted"]
    assert schema.check({"author": {"id": "a", "entity": None}}) is None
    assert schema.check({"author": {"id": "a"}}) is None
    assert schema.check({"author": {"id": "a", "entity": {}}}) == "data.author.entity.name: required property missing"
    assert schema.check({"author": "nobody"}) == "data.author: expected object, got string"


def test_message_is_capped() -> None:
    spec = {f"f{i:02}": "string" for i in range(30)}
    schemas, _ = compile_events({"many": spec})
    message = schemas["many"].check({})
    assert message is not None
    assert message.count("required property missing") == 10
    assert message.endswith("and 20 more")


# ---------------------------------------------------------------------------------------------
# invalid schemas are config errors at file:line:col with the key path


def load_problems(events_yaml: str) -> list[str]:
    text = "version: 1\nevents:\n" + textwrap.indent(textwrap.dedent(events_yaml), "  ")
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, make_registry(), filename="rules.yaml")
    return [str(problem) for problem in caught.value.problems]


def test_unknown_type_is_located_with_a_suggestion() -> None:
    problems = load_problems("""\
        planet.completed:
          userSlug: string
          userName: strng
        """)
    assert problems == [
        "rules.yaml:5:15: events['planet.completed'].userName: unknown type 'strng'; did you mean 'string'? "
        "(types: string, integer, number, boolean, object, array, null, any, list[T])"
    ]


@pytest.mark.parametrize(
    ("events_yaml", "expected"),
    [
        ("a.b:\n  x: 'string?'\n", "rules.yaml:4:8: events['a.b'].x: '?' in type 'string?': '?' goes on the key"),
        ("a.b:\n  x: list[string\n", "rules.yaml:4:8: events['a.b'].x: expected ']' in type 'list[string'"),
        ("a.b:\n  x: [string, integer]\n", "rules.yaml:4:8: events['a.b'].x: a list declares an array"),
        ("a.b:\n  x:\n", "rules.yaml:4:7: events['a.b'].x: expected a type"),
        ("a.b:\n  x?: 5\n", "rules.yaml:4:9: events['a.b']['x?']: expected a type"),
        ("a.b:\n  $strict: yes\n", "rules.yaml:4:14: events['a.b']['$strict']: expected true or false, got a string"),
        ("a.b:\n  n:\n    $nulable: true\n", "rules.yaml:5:7: events['a.b'].n['$nulable']: unknown option '$nulable'"),
        ("a.b:\n  x: string\n  x?: string\n", "rules.yaml:5:5: events['a.b']['x?']: field 'x' is declared twice"),
        ("a.b: string\n", "rules.yaml:3:8: events['a.b']: expected a mapping of data's fields"),
        ("'a.*':\n  x: string\n", "rules.yaml:3:3: events['a.*']: a schema is declared for one exact event type"),
        ("a.b:\n  schema: {type: objekt}\n", "rules.yaml:4:20: events['a.b'].schema.type: invalid JSON Schema"),
        (
            "a.b:\n  schema: {$ref: '#/$defs/nope'}\n",
            "rules.yaml:4:20: events['a.b'].schema['$ref']: reference '#/$defs/nope' points to nothing",
        ),
        (
            "a.b:\n  schema: {$ref: 'https://example.com/s.json'}\n",
            "rules.yaml:4:20: events['a.b'].schema['$ref']: only references within the schema",
        ),
        (
            "a.b:\n  schema: {$schema: 'https://example.com/mine'}\n",
            "rules.yaml:4:23: events['a.b'].schema['$schema']: unknown JSON Schema dialect",
        ),
        (
            "a.b:\n  schema: {properties: {n: {pattern: '(a)\\1'}}}\n",
            "rules.yaml:4:40: events['a.b'].schema.properties.n.pattern: not supported by the linear-time "
            "regex engine (RE2): invalid escape sequence: \\1;",
        ),
        (
            "a.b:\n  x: {schema: {type: object, patternProperties: {'(?=k)': {}}}}\n",
            "rules.yaml:4:52: events['a.b'].x.schema.patternProperties['(?=k)']: not supported by the "
            "linear-time regex engine (RE2): invalid perl operator: (?=",
        ),
        (
            "a.b:\n  schema: {patternProperties: {'^k': {}}, unevaluatedProperties: false}\n",
            "rules.yaml:4:45: events['a.b'].schema.unevaluatedProperties: 'unevaluatedProperties' with "
            "'patternProperties' in the same schema is not supported",
        ),
        (
            "a.b:\n  x: {schema: {$ref: '#/$defs/y'}}\n",
            "rules.yaml:4:18: events['a.b'].x.schema['$ref']: '$ref' is only allowed in the schema of a whole event",
        ),
    ],
)
def test_invalid_spec_is_a_located_config_error(events_yaml: str, expected: str) -> None:
    problems = load_problems(events_yaml)
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected), problems[0]


def test_every_problem_is_reported_at_once() -> None:
    problems = load_problems("a.b:\n  x: strng\n  y: [intger]\nc.d:\n  z: bool\n")
    assert [p.split(": ", 2)[1] for p in problems] == ["events['a.b'].x", "events['a.b'].y[0]", "events['c.d'].z"]


def test_events_section_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text("version: 1\nevents: [a]\n", make_registry(), filename="rules.yaml")
    assert [str(p) for p in caught.value.problems] == ["rules.yaml:2:9: events: expected a mapping, got a list"]


def test_valid_section_is_compiled_once_at_load() -> None:
    text = "version: 1\nevents:\n  a.b: {x: string}\n  c.d: {schema: {type: object}}\n"
    loaded = load_config_text(text, make_registry())
    assert set(loaded.event_schemas) == {"a.b", "c.d"}
    assert all(isinstance(s, EventSchema) for s in loaded.event_schemas.values())


# ---------------------------------------------------------------------------------------------
# schema regexes (`pattern`, `patternProperties`) run on RE2, in time linear in publisher data

CATASTROPHIC = r"^([a-zA-Z0-9._%+-]+)*@example\.com$"  # backtracking: 40 characters never end in `re`
HOSTILE_SCHEMA = {
    "type": "object",
    "properties": {"email": {"type": "string", "pattern": CATASTROPHIC}},
    "patternProperties": {CATASTROPHIC: {"type": "string"}},
    "additionalProperties": False,
}
HOSTILE_CHECK = f"""
import json, sys
from router.config.event_schemas import compile_events
schemas, problems = compile_events({{"signup": {{"schema": {HOSTILE_SCHEMA!r}}}}})
assert problems == [], problems
check = schemas["signup"].check
assert check({{"email": "ada@example.com", "bob@example.com": "x"}}) is None  # warm: RE2 loaded, patterns compiled
print("ready", flush=True)
print(json.dumps(check({{"email": "a" * 40, "a" * 40: "x"}})), flush=True)
"""


def test_schema_patterns_on_hostile_data_finish_at_once() -> None:
    # In a child process: Python's `re` holds the GIL for the whole search, so a thread running
    # the old engine could neither be waited for with a deadline nor abandoned.
    # Unbuffered: the line read before communicate() must not take the answer with it.
    child = subprocess.Popen(
        [sys.executable, "-c", HOSTILE_CHECK], stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0
    )
    try:
        assert child.stdout is not None
        ready = child.stdout.readline()
        assert ready == b"ready\n", ready + child.communicate(timeout=30)[1]
        try:
            out, err = child.communicate(timeout=2)  # generous: RE2 takes microseconds
        except subprocess.TimeoutExpired:
            pytest.fail("validating 40 hostile characters against a schema pattern did not finish in 2 s")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, err
    assert json.loads(out) == (
        f"data.{'a' * 40}: not declared (the schema allows no other fields); data.email: fails 'pattern' ({CATASTROPHIC})"
    )


def test_schema_patterns_still_validate_and_refuse() -> None:
    raw = {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": r"^[A-Z]{3}-\d+$"}, "email": {"pattern": CATASTROPHIC}},
        "patternProperties": {"^x-": {"type": "integer"}},
        "additionalProperties": False,
    }
    schemas, problems = compile_events({"t": {"schema": raw}})
    assert problems == []
    check = schemas["t"].check
    assert check({"code": "ABC-12", "email": "ada.l@example.com", "x-retries": 3}) is None
    assert check({"code": "abc-12"}) == "data.code: fails 'pattern' (^[A-Z]{3}-\\d+$)"
    assert check({"code": "ABC-12 "}) == "data.code: fails 'pattern' (^[A-Z]{3}-\\d+$)"  # anchored by the pattern
    assert check({"email": "ada@example.org"}) == f"data.email: fails 'pattern' ({CATASTROPHIC})"
    assert check({"x-retries": "3"}) == 'data["x-retries"]: expected integer, got string'
    assert check({"y-retries": 3}) == 'data["y-retries"]: not declared (the schema allows no other fields)'
    assert check({"code": 5}) == "data.code: expected string, got integer"  # pattern applies to strings only
    # A field's own escape hatch inside the compact form gets the same engine.
    compact, problems = compile_events({"c": {"sku": {"schema": {"type": "string", "pattern": "^[a-z]+$"}}}})
    assert problems == []
    assert compact["c"].check({"sku": "abc"}) is None
    assert compact["c"].check({"sku": "ABC"}) == "data.sku: fails 'pattern' (^[a-z]+$)"


# ---------------------------------------------------------------------------------------------
# the engine refuses events that fail their schema

RULES = """
version: 1
defaults:
  retry: {attempts: 3, backoff: 50ms, max_backoff: 100ms, jitter: 0}
channels:
  a: {type: recorder}
events:
  planet.completed:
    userName: string
    planetName: string
rules:
  - {name: planets, on: planet.completed, template: planet, channels: [a]}
  - {name: others, on: user.signed_up, template: user, channels: [a]}
"""
TEMPLATES = {"planet.j2": "{{ data.userName }} completed {{ data.planetName }}", "user.j2": "hello {{ data.name }}"}


@pytest.fixture(autouse=True)
def _reset_recorder() -> None:
    RecorderChannel.reset()


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    h = await start_harness(tmp_path, RULES, TEMPLATES)
    yield h
    await h.close()


def sent() -> list[str]:
    return [m.body for m in RecorderChannel.sent.get("a", [])]


async def test_failing_event_is_dead_lettered_whole_and_the_valid_one_delivered(harness: Harness) -> None:
    bad = event_bytes("planet.completed", "evt-bad", {"planetName": 42, "secret": "hunter2"})
    await harness.publish(bad, routing_key="planet.completed")
    await harness.publish(event_bytes("planet.completed", "evt-ok", {"userName": "Ada", "planetName": "Mars"}))
    await harness.publish(event_bytes("user.signed_up", "evt-user", {"anything": True, "name": "Grace"}))
    await until(lambda: sorted(sent()) == ["Ada completed Mars", "hello Grace"])
    await until(lambda: harness.metrics.dead_letters.labels("schema")._value.get() == 1)
    [letter] = await harness.transport.dlq_list()
    assert letter.reason == "schema"
    assert letter.body == bad  # the event as it came, so a replay after a fix routes it again
    assert letter.error == "data.planetName: expected string, got integer; data.userName: required property missing"
    assert "hunter2" not in letter.error
    assert harness.metrics.events_failed.labels("schema")._value.get() == 1
    assert harness.metrics.retries_scheduled.labels("a")._value.get() == 0
    assert RecorderChannel.attempts == {"a": 2}  # nothing was sent for the refused event


# ---------------------------------------------------------------------------------------------
# router test / router schema


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "templates").mkdir()
    for name, source in TEMPLATES.items():
        (tmp_path / "templates" / name).write_text(source)
    (tmp_path / "rules.yaml").write_text(RULES.replace("type: recorder", "type: console"))
    return tmp_path


def run_test(project: Path, data: dict[str, Any], *extra: str) -> Any:
    event = project / "event.json"
    event.write_text(json.dumps(event_object("planet.completed", None, data)))
    return CliRunner().invoke(cli, ["test", str(event), "-c", str(project / "rules.yaml"), *extra])


def test_router_test_reports_a_schema_failure_and_exits_1(project: Path) -> None:
    result = run_test(project, {"userName": 7})
    assert result.exit_code == 1, result.output
    assert "does not match the schema declared for 'planet.completed'" in result.output
    assert "data.planetName: required property missing; data.userName: expected string, got integer" in result.output
    assert "planets" not in result.output  # no rule is shown as firing: nothing would be delivered


def test_router_test_json_reports_the_schema_failure(project: Path) -> None:
    result = run_test(project, {"userName": "Ada"}, "--json")
    assert result.exit_code == 1
    payload = json.loads(result.output)
    assert payload["rules"] == [] and payload["channels"] == []
    assert payload["schema"] == {"valid": False, "error": "data.planetName: required property missing"}


def test_router_test_of_a_valid_event_is_unchanged(project: Path) -> None:
    result = run_test(project, {"userName": "Ada", "planetName": "Mars"})
    assert result.exit_code == 0, result.output
    assert "✓ planets -> a" in result.output


def test_router_schema_describes_the_events_section() -> None:
    result = CliRunner().invoke(cli, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    validator = Draft202012Validator(schema)
    good = {
        "events": {
            "planet.completed": {"userName": "string", "subject?": "string | null", "tags": ["string"]},
            "raw.thing": {"schema": {"type": "object"}},
            "nested.one": {"author": {"id": "string", "$nullable": True}, "ids": "list[integer]"},
        }
    }
    assert list(validator.iter_errors(good)) == []
    for bad in ({"planet.*": {"a": "string"}}, {"a.b": {"x": 5}}, {"a.b": {"x": "strng"}}, {"a.b": {"$nope": 1}}):
        assert list(validator.iter_errors({"events": bad})), bad
