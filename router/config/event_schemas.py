"""Event schemas: the optional ``events:`` section of rules.yaml.

Each entry declares the fields of one event type's ``data``, in a compact form or as a full
JSON Schema, and is compiled here once per configuration load into a JSON Schema (draft
2020-12) and a ``jsonschema`` validator. The compact form::

    events:
      planet.completed:
        userName: string              # required
        subject?: string              # '?' on the key: the field may be absent
        score: integer | null         # '| null' on the type: the value may be null
        tags: [string]                # an array of strings (also written list[string])
        author:                       # a nested object
          id: string
          $nullable: true             # the object itself may be null
        meta: object                  # any object; also array, number, boolean, any
      raw.thing:
        schema: {type: object, ...}   # a full JSON Schema for data

Fields not declared are allowed (events gain fields over time; a producer should not break
the router by adding one); ``$strict: true`` in a mapping rejects them. Besides the JSON
Schema, compiling yields the declared field tree (:data:`Fields`) that ``router check``
compares templates against (router.templating.field_checks).

Validation uses the ``jsonschema`` library rather than a validator of our own: the JSON
Schema semantics (unions, nested arrays, the escape hatch's full vocabulary) are subtle,
and a well-kept implementation gets them right. Messages are built here from the errors'
paths and keywords, never from jsonschema's own text, which quotes the offending values.
Its regex keywords (``pattern``, ``patternProperties``) run on the linear-time engine, RE2
(router/config/schema_regex.py): a pattern RE2 cannot take is a config error, located.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

from router.config.schema_regex import additional_keys, linear_validator, regex_problems
from router.core.kinds import kind_of
from router.core.suggest import closest

if TYPE_CHECKING:  # jsonschema is imported where a schema is compiled: a configuration without
    # `events:` (and `router --help`) does not pay its ~0.1 s import
    from jsonschema.exceptions import SchemaError, ValidationError
    from jsonschema.protocols import Validator

SpecPath = tuple[str | int, ...]
"""A location inside the ``events:`` section, relative to it: event type, then keys."""

Fields: TypeAlias = dict[str, "Fields | None"]
"""Declared fields of an object: name -> its own declared fields, or None where anything goes
(a scalar, an array, ``object``, ``any``, an open JSON Schema)."""

SCALARS: dict[str, dict[str, Any]] = {
    "string": {"type": "string"},
    "integer": {"type": "integer"},
    "number": {"type": "number"},
    "boolean": {"type": "boolean"},
    "object": {"type": "object"},
    "array": {"type": "array"},
    "null": {"type": "null"},
    "any": {},
}
"""The type names of the compact form; ``list[T]`` and ``[T]`` are arrays of T."""

OPTIONS = ("$nullable", "$strict")
"""Keys of a compact mapping that are options, not fields."""

ESCAPE = "schema"
"""``{schema: {...}}`` (the only key, a mapping) is a full JSON Schema instead of fields."""

MAX_ERRORS = 10
"""At most this many failing paths are listed in one message."""

_TOKEN = re.compile(r"\s*(?:(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<punct>[\[\]|?])|(?P<other>\S))")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_COMPOSITION = ("anyOf", "oneOf", "allOf", "not", "$ref", "$dynamicRef", "if", "patternProperties")
_REFERENCES = ("$ref", "$dynamicRef")
_BASE_URI = "urn:router:event-schema"
_DIALECT = "https://json-schema.org/draft/2020-12/schema"


@dataclass(frozen=True)
class SpecProblem:
    """Why part of the ``events:`` section does not compile, at a path relative to the section."""

    path: SpecPath
    message: str
    at_key: bool = False


@dataclass(frozen=True)
class Compiled:
    """A compact field or object compiled: its JSON Schema and its declared fields."""

    schema: dict[str, Any]
    fields: Fields | None = None


@dataclass(frozen=True)
class EventSchema:
    """The declared schema of one event type's ``data``, compiled and ready to validate."""

    type: str
    schema: dict[str, Any]  # JSON Schema of data
    fields: Fields | None  # what templates may read; None: not checkable (an open JSON Schema)
    validator: Validator = field(repr=False, compare=False)

    def check(self, data: Any) -> str | None:
        """None when ``data`` conforms, else one message listing the failing paths (no values)."""
        try:
            errors = self.validator.iter_errors(data)
            first = next(errors, None)
            if first is None:
                return None
            messages = _messages([first, *errors])
        except Exception as error:  # a schema that cannot be evaluated must not requeue forever
            return f"the schema declared for '{self.type}' could not be evaluated ({type(error).__name__})"
        shown = messages[:MAX_ERRORS]
        if len(messages) > MAX_ERRORS:
            shown.append(f"and {len(messages) - MAX_ERRORS} more")
        return "; ".join(shown)


# ---------------------------------------------------------------------------------------------
# compiling


def compile_events(section: Mapping[Any, Any]) -> tuple[dict[str, EventSchema], list[SpecProblem]]:
    """Compile every entry of the ``events:`` section; returns the schemas and every problem found.

    An entry with a problem is left out of the schemas (the configuration is rejected anyway).
    """
    schemas: dict[str, EventSchema] = {}
    problems: list[SpecProblem] = []
    for event_type, spec in section.items():
        if not isinstance(event_type, str):
            continue  # the structural validation reports a key that is not a string
        found: list[SpecProblem] = []
        schema = compile_event(event_type, spec, found)
        problems.extend(found)
        if schema is not None and not found:
            schemas[event_type] = schema
    return schemas, problems


def compile_event(event_type: str, spec: Any, problems: list[SpecProblem]) -> EventSchema | None:
    """Compile one entry (compact fields or ``{schema: ...}``); problems are appended to ``problems``."""
    where: SpecPath = (event_type,)
    if _is_escape(spec):
        raw = spec[ESCAPE]
        cls = _check_escape(raw, (*where, ESCAPE), problems, top=True)
        if cls is None:
            return None
        return EventSchema(event_type, raw, fields_of(raw), linear_validator(cls)(raw))
    if not isinstance(spec, dict):
        problems.append(
            SpecProblem(
                where,
                f"expected a mapping of data's fields (name: type) or {{{ESCAPE}: <JSON Schema>}}, got {_describe(spec)}",
            )
        )
        return None
    before = len(problems)
    if "$nullable" in spec:
        problems.append(SpecProblem((*where, "$nullable"), "an event's data is always an object", at_key=True))
    compiled = _object(spec, where, problems)
    if len(problems) > before:
        return None
    # No check_schema here: the compact form only yields valid schemas (a property test holds
    # it to that), and checking costs ~20 ms per event type at every load. A user's JSON
    # Schema, escape hatches included, is always checked.
    from jsonschema import Draft202012Validator

    validator = linear_validator(Draft202012Validator)(compiled.schema)
    return EventSchema(event_type, compiled.schema, compiled.fields, validator)


def compile_field(spec: Any, where: SpecPath, problems: list[SpecProblem]) -> Compiled:
    """Compile one compact field value: a type expression, ``[T]``, a nested mapping or ``{schema: ...}``."""
    if isinstance(spec, str):
        schema = parse_type(spec, where, problems)
        return Compiled(schema if schema is not None else {})
    if isinstance(spec, list):
        if len(spec) != 1:
            problems.append(
                SpecProblem(where, f"a list declares an array by its one item type, as [string]; got {len(spec)} items")
            )
            return Compiled({"type": "array"})
        return Compiled({"type": "array", "items": compile_field(spec[0], (*where, 0), problems).schema})
    if _is_escape(spec):
        raw = spec[ESCAPE]
        _check_escape(raw, (*where, ESCAPE), problems, top=False)
        return Compiled(raw, fields_of(raw))
    if isinstance(spec, dict):
        return _object(spec, where, problems)
    problems.append(
        SpecProblem(
            where,
            f"expected a type ({', '.join(SCALARS)}, list[T]), a mapping of fields or [item type], got {_describe(spec)}",
        )
    )
    return Compiled({})


def _object(spec: Mapping[Any, Any], where: SpecPath, problems: list[SpecProblem]) -> Compiled:
    properties: dict[str, Any] = {}
    required: list[str] = []
    fields: Fields = {}
    nullable = strict = False
    for key, value in spec.items():
        at: SpecPath = (*where, key)
        if not isinstance(key, str):
            problems.append(SpecProblem(at, f"a field name is a string, got {_describe(key)}", at_key=True))
            continue
        if key.startswith("$"):
            if key not in OPTIONS:
                hint = closest(key, OPTIONS)
                also = f"did you mean '{hint}'? " if hint else ""
                problems.append(
                    SpecProblem(
                        at,
                        f"unknown option '{key}' ({also}options: {', '.join(OPTIONS)}; "
                        f"a field whose name starts with '$' needs {{{ESCAPE}: ...}})",
                        at_key=True,
                    )
                )
            elif not isinstance(value, bool):
                problems.append(SpecProblem(at, f"expected true or false, got {_describe(value)}"))
            elif key == "$nullable":
                nullable = value
            else:
                strict = value
            continue
        optional = key.endswith("?")
        name = key[:-1] if optional else key
        if not name or name.endswith("?"):
            problems.append(
                SpecProblem(at, "a field name ends with at most one '?' (the field is optional)", at_key=True)
            )
            continue
        if name in properties:
            problems.append(SpecProblem(at, f"field '{name}' is declared twice", at_key=True))
            continue
        compiled = compile_field(value, at, problems)
        properties[name] = compiled.schema
        fields[name] = compiled.fields
        if not optional:
            required.append(name)
    schema: dict[str, Any] = {"type": ["object", "null"] if nullable else "object", "properties": properties}
    if required:
        schema["required"] = required
    if strict:
        schema["additionalProperties"] = False
    return Compiled(schema, fields)


def _is_escape(spec: Any) -> bool:
    return isinstance(spec, dict) and len(spec) == 1 and isinstance(spec.get(ESCAPE), dict)


def _check_escape(
    raw: dict[str, Any], where: SpecPath, problems: list[SpecProblem], *, top: bool
) -> type[Validator] | None:
    """Check a user's JSON Schema; returns its validator class, or None after appending problems."""
    before = len(problems)
    for path, key, value in _walk_keys(raw):
        if not top and key in ("$schema", "$id", *_REFERENCES):
            problems.append(
                SpecProblem(
                    (*where, *path, key),
                    f"'{key}' is only allowed in the {ESCAPE} of a whole event, not of one field",
                    at_key=True,
                )
            )
        elif key in _REFERENCES and not (isinstance(value, str) and value.startswith("#")):
            problems.append(
                SpecProblem((*where, *path, key), "only references within the schema ('#/$defs/...') are supported")
            )
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for

    cls: type[Validator] = validator_for(raw, default=Draft202012Validator)
    dialect = raw.get("$schema")
    if dialect is not None and cls is Draft202012Validator and str(dialect).rstrip("#") != _DIALECT:
        problems.append(
            SpecProblem((*where, "$schema"), "unknown JSON Schema dialect (leave '$schema' out for draft 2020-12)")
        )
        return None
    try:
        cls.check_schema(raw)
    except SchemaError as error:
        problems.append(SpecProblem((*where, *error.absolute_path), f"invalid JSON Schema: {_schema_message(error)}"))
    else:
        # Patterns run on publisher data, on the linear-time engine: refused here, like a rule's regex.
        for path, reason, at_key in regex_problems(raw):
            problems.append(SpecProblem((*where, *path), reason, at_key=at_key))
    if len(problems) == before and top:
        _check_references(raw, where, problems)
    return cls if len(problems) == before else None


def _check_references(raw: dict[str, Any], where: SpecPath, problems: list[SpecProblem]) -> None:
    """Resolve every local reference now, so a dangling one is a config error and not a runtime one."""
    from referencing import Registry, Resource
    from referencing.exceptions import Unresolvable
    from referencing.jsonschema import DRAFT202012

    resource: Resource[Any] = Resource.from_contents(raw, default_specification=DRAFT202012)
    resolver = Registry().with_resource(_BASE_URI, resource).resolver(base_uri=_BASE_URI)
    for path, key, value in _walk_keys(raw):
        if key in _REFERENCES and isinstance(value, str):
            try:
                resolver.lookup(value)
            except Unresolvable:
                problems.append(SpecProblem((*where, *path, key), f"reference '{value}' points to nothing"))


def _walk_keys(node: Any, path: SpecPath = ()) -> Iterator[tuple[SpecPath, str, Any]]:
    """Every (path of the mapping, key, value) in a JSON document, parents first."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, str(key), value
            yield from _walk_keys(value, (*path, str(key)))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _walk_keys(item, (*path, index))


def _schema_message(error: SchemaError) -> str:
    message = error.message
    return message if len(message) <= 200 else message[:199] + "…"


def fields_of(schema: Any) -> Fields | None:
    """The declared fields of a user's JSON Schema: only where it closes an object to its
    ``properties`` (``additionalProperties: false``) with nothing that could add others."""
    if not isinstance(schema, dict) or schema.get("additionalProperties") is not False:
        return None
    properties = schema.get("properties")
    if not isinstance(properties, dict) or any(key in schema for key in _COMPOSITION):
        return None
    return {str(name): fields_of(sub) for name, sub in properties.items()}


# ---------------------------------------------------------------------------------------------
# type expressions: string | null, list[string], [integer], any


def parse_type(text: str, where: SpecPath, problems: list[SpecProblem]) -> dict[str, Any] | None:
    """The JSON Schema of a compact type expression, or None after appending a problem."""
    tokens = _tokens(text)
    if isinstance(tokens, str):
        problems.append(SpecProblem(where, tokens))
        return None
    parser = _Parser(text, tokens)
    try:
        schema = parser.union()
        parser.end()
    except _SyntaxProblem as problem:
        problems.append(SpecProblem(where, str(problem)))
        return None
    return schema


class _SyntaxProblem(Exception):
    pass


def _tokens(text: str) -> list[str] | str:
    tokens: list[str] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:  # only trailing whitespace is left
            break
        position = match.end()
        if match.group("other"):
            return f"unexpected '{match.group('other')}' in type '{text}'"
        tokens.append(match.group("name") or match.group("punct"))
    return tokens


class _Parser:
    def __init__(self, text: str, tokens: list[str]) -> None:
        self.text = text
        self.tokens = tokens
        self.position = 0

    def peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self) -> str | None:
        token = self.peek()
        self.position += 1
        return token

    def expect(self, token: str) -> None:
        found = self.take()
        if found != token:
            shown = f"'{found}'" if found is not None else "the end"
            raise _SyntaxProblem(f"expected '{token}' in type '{self.text}', found {shown}")

    def end(self) -> None:
        token = self.peek()
        if token == "?":
            raise _SyntaxProblem(
                f"'?' in type '{self.text}': '?' goes on the key for an optional field (name?: string); "
                "for a value that may be null write 'string | null'"
            )
        if token is not None:
            raise _SyntaxProblem(f"unexpected '{token}' in type '{self.text}' (join alternatives with '|')")

    def union(self) -> dict[str, Any]:
        members = [self.atom()]
        while self.peek() == "|":
            self.take()
            members.append(self.atom())
        return union(members)

    def atom(self) -> dict[str, Any]:
        token = self.take()
        if token is None:
            raise _SyntaxProblem(f"missing a type in '{self.text}'" if self.text.strip() else "missing a type")
        if token == "[":
            items = self.union()
            self.expect("]")
            return {"type": "array", "items": items}
        if token == "list" and self.peek() == "[":
            self.take()
            items = self.union()
            self.expect("]")
            return {"type": "array", "items": items}
        if token in SCALARS:
            return dict(SCALARS[token])
        if not _IDENT.match(token):
            raise _SyntaxProblem(f"unexpected '{token}' in type '{self.text}'")
        hint = closest(token, [*SCALARS, "list"])
        also = f"; did you mean '{hint}'?" if hint else ""
        raise _SyntaxProblem(f"unknown type '{token}'{also} (types: {', '.join(SCALARS)}, list[T])")


def union(members: list[dict[str, Any]]) -> dict[str, Any]:
    """One schema accepting what any member accepts: a ``type`` list where that says it, else ``anyOf``."""
    unique: list[dict[str, Any]] = []
    for member in members:
        if member == {}:
            return {}  # any | T is any
        if member not in unique:
            unique.append(member)
    if len(unique) == 1:
        return unique[0]
    types = [m["type"] for m in unique]
    detailed = [m for m in unique if set(m) != {"type"}]
    # A type list is exact when types differ and at most one member has more than its type
    # (its extra keywords, such as items, apply to its own type only).
    if len(set(types)) == len(types) and len(detailed) <= 1:
        merged = dict(detailed[0]) if detailed else {}
        merged["type"] = types
        return merged
    return {"anyOf": unique}


# ---------------------------------------------------------------------------------------------
# validation messages


def _messages(errors: list[ValidationError]) -> list[str]:
    found = {message for error in errors for message in _describe_error(error)}
    return sorted(found)  # each message starts with its path: in path order


def _describe_error(error: ValidationError) -> list[str]:
    base: SpecPath = ("data", *error.absolute_path)
    where = show_path(base)
    keyword = error.validator
    instance = error.instance
    value = error.validator_value
    if keyword == "required" and isinstance(instance, dict) and isinstance(value, list):
        return [f"{show_path((*base, name))}: required property missing" for name in value if name not in instance]
    if keyword == "type":
        expected = value if isinstance(value, list) else [value]
        return [f"{where}: expected {' or '.join(map(str, expected))}, got {json_type(instance)}"]
    if keyword == "additionalProperties" and isinstance(instance, dict):
        schema = error.schema if isinstance(error.schema, dict) else {}
        extra = additional_keys(instance, schema)
        return [f"{show_path((*base, name))}: not declared (the schema allows no other fields)" for name in extra]
    if keyword in ("enum", "const"):
        return [f"{where}: not one of the allowed values"]
    if keyword in ("anyOf", "oneOf"):
        if not error.context:
            return [f"{where}: matches more than one of the allowed forms"]
        from jsonschema.exceptions import best_match

        closest_error = best_match(error.context)
        return [f"{where}: matches none of the allowed forms (closest: {_describe_error(closest_error)[0]})"]
    if keyword is None or value is False:
        return [f"{where}: not allowed"]
    if isinstance(value, (str, int, float, bool)):
        return [f"{where}: fails '{keyword}' ({value})"]
    return [f"{where}: fails '{keyword}'"]


def json_type(value: Any) -> str:
    """The JSON type of a decoded value, as JSON Schema names it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def show_path(path: SpecPath) -> str:
    """``data.user.name``, ``data.tags[0]``, ``data["odd key"]`` (long keys cut)."""
    text = str(path[0]) if path else ""
    for part in path[1:]:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _IDENT.match(part):
            text += f".{part}"
        else:
            shown = part if len(part) <= 40 else part[:39] + "…"
            text += f"[{json.dumps(shown)}]"
    return text


def _describe(value: Any) -> str:
    return kind_of(value)
