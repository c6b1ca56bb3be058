"""JSON Schema of rules.yaml for editors (`router schema`), including the registered plugins.

The schema is generated from the pydantic models, then adjusted where the YAML form is
looser than the model's validated form: durations are written as strings, ``on`` may be a
single pattern, a condition may be a bare value, and the options of a channel or the
``with:`` of a rule depend on the channel's ``type`` and the rule's ``job``.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, JsonSchemaValue, models_json_schema
from pydantic_core import core_schema

from router.config.catalog import Catalog
from router.config.event_schemas import ESCAPE, OPTIONS, SCALARS
from router.config.models import OPERATORS, RouterConfig
from router.core.durations import parse_duration

_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_DURATION_PATTERN = r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d|w)\s*$"


class _Generator(GenerateJsonSchema):
    """Describes Duration fields as what users write: ``"5m"`` or a number of seconds."""

    def function_before_schema(self, schema: core_schema.BeforeValidatorFunctionSchema) -> JsonSchemaValue:
        if schema["function"].get("function") is parse_duration:
            return {
                "anyOf": [
                    {"type": "string", "pattern": _DURATION_PATTERN},
                    {"type": "number", "minimum": 0},
                ],
                "description": "A duration: 250ms, 2s, 5m, 24h, 7d, or a number of seconds.",
            }
        return super().function_before_schema(schema)


def _ref(key_map: dict[Any, Any], model: type[BaseModel]) -> dict[str, Any]:
    mode: JsonSchemaMode = "validation"
    ref = key_map.get((model, mode))
    # A plugin model without a JSON Schema form (arbitrary types) is described loosely.
    return dict(ref) if ref else {"type": "object"}


def _describable(model: type[BaseModel]) -> bool:
    try:
        model.model_json_schema(schema_generator=_Generator)
    except Exception:  # a plugin's broken model must not break `router schema` for everyone
        return False
    return True


def config_json_schema(registry: Catalog) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of rules.yaml with every registered channel type and job."""
    mode: JsonSchemaMode = "validation"
    models: list[type[BaseModel]] = [RouterConfig]
    models += [cls.Config for cls in registry.channels.values()]
    models += [cls.With for cls in registry.jobs.values()]
    unique = [m for m in dict.fromkeys(models) if m is RouterConfig or _describable(m)]  # plugins may share models
    key_map, generated = models_json_schema([(m, mode) for m in unique], schema_generator=_Generator)
    defs: dict[str, Any] = copy.deepcopy(generated.get("$defs", {}))

    root_name = _ref(key_map, RouterConfig)["$ref"].rsplit("/", 1)[-1]
    root = defs.pop(root_name)
    channels = root["properties"]["channels"]
    defs.pop(channels["additionalProperties"]["$ref"].rsplit("/", 1)[-1], None)  # ChannelSpec: replaced
    channels["additionalProperties"] = _channel_schema(registry, key_map)

    rule_name = root["properties"]["rules"]["items"]["$ref"].rsplit("/", 1)[-1]
    _patch_rule(defs[rule_name], registry, key_map)
    _patch_events(root["properties"]["events"], defs)

    return {"$schema": _DIALECT, "title": "rules.yaml", **root, "$defs": defs}


def _patch_events(events: dict[str, Any], defs: dict[str, Any]) -> None:
    """``events:``: per event type, compact fields or ``{schema: <JSON Schema>}`` (router/config/event_schemas.py)."""
    scalar = "|".join([*SCALARS, "list"])
    # The type grammar is checked by the loader; the pattern only helps an editor flag a typo.
    defs["EventField"] = {
        "description": "A type (string, integer, number, boolean, object, array, any, null, list[T], "
        "'T | null'), [item type], a mapping of nested fields, or {schema: <JSON Schema>}.",
        "anyOf": [
            {"type": "string", "pattern": rf"^[\s\[\]|]*(?:(?:{scalar})[\s\[\]|]*)+$"},
            {"type": "array", "items": {"$ref": "#/$defs/EventField"}, "minItems": 1, "maxItems": 1},
            {"$ref": "#/$defs/EventFields"},
        ],
    }
    defs["EventFields"] = {
        "type": "object",
        "description": "Field name (a trailing '?' makes it optional) -> its type. "
        "$nullable: the object may be null; $strict: other fields are rejected.",
        "properties": {option: {"type": "boolean"} for option in OPTIONS},
        "patternProperties": {"^[^$]": {"$ref": "#/$defs/EventField"}},
        "additionalProperties": False,
    }
    escape = {
        "type": "object",
        "properties": {ESCAPE: {"type": "object", "description": "A JSON Schema (draft 2020-12) of data."}},
        "required": [ESCAPE],
        "additionalProperties": False,
    }
    events["additionalProperties"] = {"anyOf": [escape, {"$ref": "#/$defs/EventFields"}]}
    events["propertyNames"] = {"pattern": r"^[^\s.*]+(\.[^\s.*]+)*$"}


def _channel_schema(registry: Catalog, key_map: dict[Any, Any]) -> dict[str, Any]:
    names = sorted(registry.channels)
    schema: dict[str, Any] = {
        "type": "object",
        "required": ["type"],
        "properties": {"type": {"type": "string", "description": "The channel type (a registered plugin)."}},
        "description": "A named channel: `type` selects the plugin, the other keys are its options.",
    }
    if names:
        schema["properties"]["type"]["enum"] = names
        schema["allOf"] = [
            {
                "if": {"properties": {"type": {"const": name}}, "required": ["type"]},
                "then": _ref(key_map, registry.channels[name].Config),
            }
            for name in names
        ]
    return schema


def _patch_rule(rule: dict[str, Any], registry: Catalog, key_map: dict[Any, Any]) -> None:
    props = rule["properties"]
    props["on"] = {
        "description": props["on"].get("description", ""),
        "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}],
    }
    operators = {"type": "object", "properties": {op: {} for op in OPERATORS}, "additionalProperties": False}
    props["when"]["additionalProperties"] = {
        "description": "An {operator: operand} mapping, or a bare value meaning eq.",
        "anyOf": [operators, {"not": {"type": "object"}}],
    }
    jobs = sorted(registry.jobs)
    if not jobs:
        return
    props["job"]["enum"] = jobs
    clauses: list[dict[str, Any]] = []
    for name in jobs:
        selects: dict[str, Any] = {"properties": {"job": {"const": name}}, "required": ["job"]}
        if name == props["job"].get("default"):
            # A rule without `job:` runs the default job, so its `with:` applies then too.
            selects = {"anyOf": [selects, {"not": {"required": ["job"]}}]}
        clauses.append({"if": selects, "then": {"properties": {"with": _ref(key_map, registry.jobs[name].With)}}})
    rule["allOf"] = clauses
