"""Parse the duration strings used throughout rules.yaml (``250ms``, ``2s``, ``5m``, ``24h``, ``7d``)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")


def parse_duration(value: object) -> float:
    """Return ``value`` in seconds; accepts ``"250ms"``, ``"2s"``, ``"5m"``, ``"24h"``, ``"7d"`` or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '2s' or '5m', got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"a duration cannot be negative, got {value!r}")
        return float(value)
    if isinstance(value, str):
        match = _PATTERN.match(value)
        if match:
            return float(match.group(1)) * _UNITS[match.group(2)]
    raise ValueError(f"expected a duration like '250ms', '2s', '5m', '24h' or '7d', got {value!r}")


def format_duration(seconds: float) -> str:
    """Format seconds back into the shortest exact duration string (``90`` -> ``"90s"``, ``3600`` -> ``"1h"``)."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    for unit in ("w", "d", "h", "m"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
"""A pydantic field type: seconds as float, written in YAML as ``2s``, ``5m`` and so on."""
