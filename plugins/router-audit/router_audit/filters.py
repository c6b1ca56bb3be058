"""The ``audit_ref`` template filter: a short, stable reference to an event's audit record."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

PREFIX = "AUD-"
DEFAULT_LENGTH = 8


def event_id_of(value: Any) -> str:
    """The event id in ``value``: an id string, an Event, or a mapping with an ``id`` key."""
    if isinstance(value, str):
        return value
    found = value.get("id") if isinstance(value, Mapping) else getattr(value, "id", None)
    if found is None:
        raise ValueError(f"audit_ref needs an event or an event id, got {type(value).__name__}")
    return str(found)


def audit_ref(value: Any, length: int = DEFAULT_LENGTH) -> str:
    """``AUD-`` and the first ``length`` hex digits of the SHA-256 of the event id, upper case.

    Ids come in every shape (UUIDs, hashes, counters); a hash makes every reference the same
    short length. With the default length the result equals the ``ref`` column that
    ``audit.record`` stores, so a reference read in a notification finds its row.
    """
    if not isinstance(length, int) or isinstance(length, bool) or not 4 <= length <= 64:
        raise ValueError(f"audit_ref length must be an integer from 4 to 64, got {length!r}")
    digest = hashlib.sha256(event_id_of(value).encode("utf-8")).hexdigest()
    return PREFIX + digest[:length].upper()
