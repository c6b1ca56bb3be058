"""The regular expressions of event schemas, on the linear-time engine (router/support/linear_regex.py).

An event schema's ``pattern`` and ``patternProperties`` run on publisher data (a string's value,
an object's keys). jsonschema evaluates them with Python's backtracking ``re``: a schema with
``pattern: '^([a-zA-Z0-9._%+-]+)*@example\\.com$'`` froze the router on a 40-character string,
as a rule's ``regex`` condition did (issue 15, item 3). :func:`linear_validator` extends a
jsonschema validator class so that every keyword that matches a schema regex against data runs
it on RE2 instead: ``pattern``, ``patternProperties`` and ``additionalProperties`` (which asks
whether a key matches one of ``patternProperties``).

jsonschema's ``unevaluatedProperties`` also matches ``patternProperties`` against keys, deep in
its own helpers; rather than copy them, a schema that uses both is refused
(:func:`regex_problems`), as is a pattern RE2 cannot take. ``format: regex`` is not asserted (no
format checker is configured), so no other keyword reaches ``re`` with publisher data.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from router.support.linear_regex import LinearPattern, compile_linear, regex_problem

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

Path = tuple[str | int, ...]

_NAME_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "dependencies"})
"""Keywords whose mapping is keyed by names (property names, patterns, definition names), not keywords."""

_DATA = frozenset({"enum", "const", "default", "examples"})
"""Keywords whose value is data, never evaluated as a schema."""

UNEVALUATED_WITH_PATTERNS = (
    "'unevaluatedProperties' with 'patternProperties' in the same schema is not supported: jsonschema "
    "would match the patterns with Python's backtracking regex engine; use 'additionalProperties'"
)


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str) -> LinearPattern:
    """A schema pattern compiled once; raises RegexError (a ValueError) for one RE2 cannot take,
    which ``router check`` refuses before a schema is ever used."""
    return compile_linear(pattern)


def _matches(pattern: str, text: str) -> bool:
    return _compiled(pattern).search(text) is not None


def _pattern(validator: Any, pattern: Any, instance: Any, schema: Any) -> Iterator[Any]:
    from jsonschema.exceptions import ValidationError

    if validator.is_type(instance, "string") and not _matches(pattern, instance):
        yield ValidationError(f"the string does not match {pattern!r}")  # never the value


def _pattern_properties(validator: Any, patterns: Any, instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _matches(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional(instance: Mapping[str, Any], schema: Mapping[str, Any]) -> Iterator[str]:
    """The keys of ``instance`` neither in ``properties`` nor matched by ``patternProperties``."""
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    for key in instance:
        if key not in properties and not any(_matches(pattern, key) for pattern in patterns):
            yield key


def _additional_properties(validator: Any, additional: Any, instance: Any, schema: Any) -> Iterator[Any]:
    from jsonschema.exceptions import ValidationError

    if not validator.is_type(instance, "object"):
        return
    extras = list(_additional(instance, schema))
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        yield ValidationError(f"{len(extras)} properties are not allowed")  # never the names


@functools.cache
def linear_validator(cls: type[Validator]) -> type[Validator]:
    """``cls`` (a jsonschema validator class of any draft) with its regex keywords on RE2."""
    from jsonschema import validators

    extend: Any = validators.extend  # untyped in the stubs
    keywords = {
        "pattern": _pattern,
        "patternProperties": _pattern_properties,
        "additionalProperties": _additional_properties,
    }
    extended: type[Validator] = extend(cls, keywords)
    return extended


def additional_keys(instance: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """The keys ``additionalProperties`` applies to (for messages), matched on RE2."""
    return list(_additional(instance, schema))


def regex_problems(schema: Any) -> Iterator[tuple[Path, str, bool]]:
    """Why a (valid) JSON Schema's regexes cannot run on the linear-time engine: (path, reason,
    at_key) for each ``pattern`` value and ``patternProperties`` key RE2 cannot take, and for
    ``unevaluatedProperties`` in a schema that also has ``patternProperties``."""
    unevaluated: list[Path] = []
    has_pattern_properties = False
    for path, key, value in _keywords(schema):
        if key == "pattern" and isinstance(value, str):
            if (problem := regex_problem(value)) is not None:
                yield (*path, key), problem, False
        elif key == "patternProperties" and isinstance(value, dict):
            has_pattern_properties = True
            for pattern in value:
                if isinstance(pattern, str) and (problem := regex_problem(pattern)) is not None:
                    yield (*path, key, pattern), problem, True
        elif key == "unevaluatedProperties":
            unevaluated.append((*path, key))
    if has_pattern_properties:
        for path in unevaluated:
            yield path, UNEVALUATED_WITH_PATTERNS, True


def _keywords(node: Any, path: Path = ()) -> Iterator[tuple[Path, str, Any]]:
    """Every (path of its schema, keyword, value) of a JSON Schema, parents first; names (of
    properties, definitions, patterns) are not keywords, and data (``enum``, ``const``,
    ``default``, ``examples``) is not searched."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            yield from _keywords(item, (*path, index))
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        key = str(key)
        yield path, key, value
        if key in _DATA:
            continue
        if key in _NAME_MAPS and isinstance(value, dict):
            for name, sub in value.items():
                yield from _keywords(sub, (*path, key, str(name)))
        else:
            yield from _keywords(value, (*path, key))
