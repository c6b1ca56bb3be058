"""The JSON Schema of rules.yaml that editors use: valid, and agreeing with the loader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ConfigDict

from router.channels.base import ChannelConfig
from router.config import config_json_schema
from router.config.yamlsource import parse_yaml
from router.plugins.registry import Registry
from tests import config_plugins as plugins

jsonschema = pytest.importorskip("jsonschema")

DATA = Path(__file__).parent / "data" / "config"


@pytest.fixture(scope="module")
def validator() -> Any:
    schema = config_json_schema(plugins.make_registry())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def errors(validator: Any, document: dict[str, Any]) -> list[str]:
    return sorted(e.message for e in validator.iter_errors(document))


def test_schema_is_json_serialisable_and_names_the_dialect() -> None:
    schema = config_json_schema(plugins.make_registry())
    assert json.loads(json.dumps(schema))["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False


def test_design_example_is_valid(validator: Any) -> None:
    document = parse_yaml((DATA / "design_rules.yaml").read_text()).data
    assert errors(validator, document) == []


def test_unknown_top_level_and_rule_keys_are_invalid(validator: Any) -> None:
    assert errors(validator, {"rule": []})
    assert errors(validator, {"rules": [{"name": "a", "on": "x", "tempalte": "t"}]})


def test_channel_type_must_be_registered(validator: Any) -> None:
    assert errors(validator, {"channels": {"x": {"type": "discord", "url": "https://d.example"}}}) == []
    assert errors(validator, {"channels": {"x": {"type": "pager", "url": "https://d.example"}}})


def test_channel_options_follow_the_type(validator: Any) -> None:
    email = {"type": "email", "url": "mailtos://x", "to": ["a@example.com"]}
    assert errors(validator, {"channels": {"mail": email}}) == []
    # `to` belongs to email, not to discord; email needs `to`.
    assert errors(validator, {"channels": {"chat": {"type": "discord", "url": "https://d", "to": ["a"]}}})
    assert errors(validator, {"channels": {"mail": {"type": "email", "url": "mailtos://x"}}})


def test_with_follows_the_job(validator: Any) -> None:
    audit = {"name": "a", "on": "x", "job": "audit.record"}
    assert errors(validator, {"rules": [{**audit, "with": {"table": "t"}}]}) == []
    assert errors(validator, {"rules": [{**audit, "with": {"tabel": "t"}}]})
    # No `job:` means notify, whose `with:` takes no options.
    assert errors(validator, {"rules": [{"name": "a", "on": "x", "with": {"table": "t"}}]})
    assert errors(validator, {"rules": [{**audit, "job": "audit.recrod"}]})


def test_yaml_shorthands_are_accepted(validator: Any) -> None:
    rule = {
        "name": "a",
        "on": "planet.*",  # one pattern, not a list
        "when": {"data.tier": "gold", "data.level": {"gte": 3}},  # a bare value means eq
        "dedupe": {"key": "{{ data.id }}", "window": "24h"},  # durations as strings
        "throttle": {"limit": 1, "period": 60},  # or as seconds
    }
    assert errors(validator, {"rules": [rule]}) == []


@pytest.mark.parametrize(
    "change",
    [
        {"when": {"data.level": {"gtee": 3}}},
        {"dedupe": {"key": "k", "window": "soon"}},
        {"on": 5},
    ],
)
def test_invalid_rule_parts(validator: Any, change: dict[str, Any]) -> None:
    rule = {"name": "a", "on": "x", **change}
    assert errors(validator, {"rules": [rule]})


def test_without_plugins_the_schema_still_describes_the_file() -> None:
    schema = config_json_schema(Registry())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    assert errors(validator, {"channels": {"x": {"type": "anything", "url": "u"}}, "rules": []}) == []


def test_a_plugin_model_without_a_schema_does_not_break_the_schema() -> None:
    class Opaque:
        pass

    class OpaqueConfig(ChannelConfig):
        model_config = ConfigDict(arbitrary_types_allowed=True)
        thing: Opaque | None = None

    class Odd(plugins.Discord):
        type_name = "odd"
        Config = OpaqueConfig

    registry = plugins.make_registry()
    registry.channels["odd"] = Odd
    schema = config_json_schema(registry)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert "odd" in schema["properties"]["channels"]["additionalProperties"]["properties"]["type"]["enum"]
