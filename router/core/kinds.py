"""How a value's type is named in error messages: ``a string``, ``an array``, never the value itself."""

from __future__ import annotations

from typing import Any


def kind_of(value: Any, *, json: bool = False, integers: bool = False) -> str:
    """The type of ``value`` with an article, safe to show (it never reveals the value).

    ``json``: JSON's words (``an array``, ``an object``), for events; otherwise YAML's
    (``a list``, ``a mapping``), for rules.yaml. ``integers``: tell ``an integer`` from ``a number``.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer" if integers else "a number"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array" if json else "a list"
    if isinstance(value, dict):
        return "an object" if json else "a mapping"
    return f"a value of type {type(value).__name__}"
