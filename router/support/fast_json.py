"""Compact JSON text through orjson, with the standard library as the fallback for what orjson refuses.

The activity history encodes several documents per event on the router's own interpreter; orjson
does it in a fraction of the time. It refuses integers beyond 64 bits and non-string keys, which
event data decoded by the standard library may hold: those documents take the standard path, so
the output is the same JSON either way (compact separators, non-ASCII kept).
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def _text(value: Any) -> str:
    """JSON for what JSON does not know: times as ISO 8601, anything else as text."""
    isoformat = getattr(value, "isoformat", None)
    return str(isoformat()) if callable(isoformat) else str(value)


_STANDARD = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=_text)


def dumps(value: Any) -> str:
    """``value`` as compact JSON text; what JSON does not know becomes text (times in ISO 8601)."""
    try:
        return orjson.dumps(value, default=_text).decode()
    except orjson.JSONEncodeError:
        return _STANDARD.encode(value)
