"""The one place tests build events: an :class:`Event` object, or the wire form a producer sends.

Tests that feed the engine, the CLI or an ingest endpoint need the bytes of an event
(``event_bytes``) or its JSON object (``event_object``); tests of matching, templates and
hooks need an ``Event`` (``make_event``). A test file may keep a one-line wrapper that fixes
its own defaults, but the envelope is spelled here only. Hand-written malformed bodies (the
bad-input tests) stay literal: they are the point of those tests.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from router.core.events import Event

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
"""The default event time: fixed, so rendered output and encoded bytes are reproducible."""


def make_event(
    data: dict[str, Any] | None = None,
    *,
    type: str = "planet.completed",
    id: str = "evt-1",
    source: str = "game",
    time: datetime = T0,
    subject: str | None = None,
    routing_key: str | None = None,
    headers: dict[str, Any] | None = None,
) -> Event:
    """An ``Event`` with fixed defaults; ``data`` is used as given (not copied), ``{}`` when omitted."""
    return Event(
        type=type,
        id=id,
        source=source,
        time=time,
        data={} if data is None else data,
        subject=subject,
        routing_key=routing_key,
        headers={} if headers is None else headers,
    )


def event_object(
    type: str = "planet.completed", id: str | None = "evt-1", data: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The plain JSON envelope producers send: ``{"type", "id", "data"}``.

    ``id=None`` leaves the id out, so the router derives one from the body (as for a producer
    that sends none).
    """
    envelope: dict[str, Any] = {"type": type}
    if id is not None:
        envelope["id"] = id
    envelope["data"] = {} if data is None else dict(data)
    return envelope


def event_bytes(
    type: str = "planet.completed", id: str | None = "evt-1", data: Mapping[str, Any] | None = None
) -> bytes:
    """``event_object`` as the bytes on the wire (``json.dumps`` defaults, UTF-8)."""
    return json.dumps(event_object(type, id, data)).encode()
