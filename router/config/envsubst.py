"""``${VAR}`` and ``${VAR:-default}`` substitution in the string values of a parsed document.

Substitution runs after parsing, on string scalars only, so a value from the environment
can never change the document's structure and every error can point at the value it
came from. ``$${`` writes a literal ``${``. ``${VAR:-default}`` uses the default when VAR is
unset or empty, as the shell does.

Values that come from the environment are often secrets, so no message built here contains
one: errors name the variable and the key path only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from router.config.yamlsource import KeyPath

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class SubstitutionError(ValueError):
    """A reference in one string could not be substituted; the message holds no value."""


@dataclass
class Substitution:
    """The outcome of :func:`substitute_tree`."""

    data: Any
    errors: list[tuple[KeyPath, str]] = field(default_factory=list)
    # Non-empty values taken from the environment: callers scrub these from any output.
    secrets: set[str] = field(default_factory=set)


def expand(text: str, env: Mapping[str, str], secrets: set[str] | None = None) -> str:
    """Substitute every ``${VAR}`` / ``${VAR:-default}`` in ``text``; ``$${`` yields ``${``.

    Raises SubstitutionError for an unset variable without a default or a malformed
    reference. Values read from ``env`` are added to ``secrets`` when it is given.
    """
    out: list[str] = []
    i = 0
    while True:
        start = text.find("$", i)
        if start < 0:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:start])
        if text.startswith("$${", start):
            out.append("${")
            i = start + 3
            continue
        if not text.startswith("${", start):
            out.append("$")
            i = start + 1
            continue
        end = text.find("}", start + 2)
        if end < 0:
            raise SubstitutionError("unterminated '${' (write '$${' for a literal '${')")
        out.append(_resolve(text[start + 2 : end], env, secrets))
        i = end + 1


def _resolve(reference: str, env: Mapping[str, str], secrets: set[str] | None) -> str:
    name, sep, default = reference.partition(":-")
    if not _NAME.match(name):
        # The text inside the braces is not echoed: it may be part of a literal secret.
        raise SubstitutionError(
            "invalid '${...}' reference: expected ${NAME} or ${NAME:-default} where NAME is letters, "
            "digits and '_' (write '$${' for a literal '${')"
        )
    value = env.get(name)
    if sep and not value:
        return default
    if value is None:
        raise SubstitutionError(
            f"environment variable {name} is not set and has no default (write ${{{name}:-default}} to give one)"
        )
    if secrets is not None and value:
        secrets.add(value)
    return value


def substitute_tree(data: Any, env: Mapping[str, str]) -> Substitution:
    """Substitute in every string value of ``data`` (keys are left alone); collect every error."""
    result = Substitution(data=None)

    def walk(value: Any, path: KeyPath) -> Any:
        if isinstance(value, str):
            if "$" not in value:
                return value
            try:
                return expand(value, env, result.secrets)
            except SubstitutionError as exc:
                result.errors.append((path, str(exc)))
                return value
        if isinstance(value, dict):
            return {key: walk(item, (*path, key)) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item, (*path, index)) for index, item in enumerate(value)]
        return value

    result.data = walk(data, ())
    return result
