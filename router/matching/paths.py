"""Dotted-path lookup into JSON-like data: ``data.user.id``, ``data.items.0.sku``.

A segment selects a key of a mapping, or an element of a list when the segment is a
non-negative integer. A path that leads nowhere yields :data:`MISSING`, never an exception,
so callers can tell "absent" from a present ``null`` (``None``).
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final


class _Missing(enum.Enum):
    # An enum member rather than a bare object() so that mypy narrows on ``is MISSING``.
    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing.MISSING
"""What a lookup returns when the path does not exist (distinct from a present ``None``)."""

Getter = Callable[[Any], Any]
"""A compiled path: call it with the root object, get the value or :data:`MISSING`."""


def split_path(path: str) -> list[str]:
    """The segments of ``path``; raises ValueError for an empty path or an empty segment."""
    if not isinstance(path, str) or not path:
        raise ValueError("a path cannot be empty")
    segments = path.split(".")
    if "" in segments:
        raise ValueError(f"path '{path}' has an empty segment (two dots in a row, or a leading or trailing dot)")
    return segments


_MAX_INDEX_DIGITS = 18  # no list is longer; int() of a few thousand digits would even raise


def _index(segment: str) -> int | None:
    # Only plain non-negative decimals index lists: "-1" or "+1" would surprise in YAML. A
    # longer number indexes nothing: like a key, it finds nothing in a list.
    if segment.isascii() and segment.isdigit() and len(segment) <= _MAX_INDEX_DIGITS:
        return int(segment)
    return None


def _step(current: Any, key: str, index: int | None) -> Any:
    """One segment of a lookup, for the containers the fast paths do not cover."""
    if isinstance(current, Mapping):
        return current.get(key, MISSING)
    if index is not None and isinstance(current, Sequence) and not isinstance(current, (str, bytes, bytearray)):
        return current[index] if index < len(current) else MISSING
    return MISSING


def lookup(obj: Any, path: str) -> Any:
    """The value at dotted ``path`` inside ``obj``, or :data:`MISSING` if any segment is absent."""
    return compile_path(path)(obj)


@functools.lru_cache(maxsize=1024)  # getters are pure: share them between callers
def compile_path(path: str) -> Getter:
    """Precompile ``path`` into a getter; the hot-path form of :func:`lookup`.

    Raises ValueError for a malformed path (empty, or with an empty segment).
    """
    steps = tuple((segment, _index(segment)) for segment in split_path(path))
    if len(steps) == 1 and steps[0][1] is None:
        (key, _) = steps[0]

        def get_one(obj: Any) -> Any:
            if type(obj) is dict:
                return obj.get(key, MISSING)
            return _step(obj, key, None)

        return get_one

    def get(obj: Any) -> Any:
        current = obj
        for key, index in steps:
            # Decoded JSON is made of plain dicts and lists: test those exactly before the ABCs.
            if type(current) is dict:
                current = current.get(key, MISSING)
                if current is MISSING:
                    return MISSING
            elif type(current) is list and index is not None:
                if index >= len(current):
                    return MISSING
                current = current[index]
            else:
                current = _step(current, key, index)
                if current is MISSING:
                    return MISSING
        return current

    return get
