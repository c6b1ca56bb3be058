"""An event's story completed with the rules in force: why each other rule did not fire.

The recorder stores only the rules that fired or that flow control decided on (one call per
verdict, off the delivery path); ``not_matched`` verdicts, with the reason `router test
--explain` gives, are computed when a story is read (``GET /api/events/{id}``, `router trace`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from router.core.events import Event
from router.runtime.runtime import Runtime


def with_not_matched(story: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """``story`` with a ``not_matched`` verdict for every rule in force that did not fire."""
    envelope = story.get("event") or {}
    if not isinstance(envelope.get("type"), str) or story.get("rejection"):
        return story  # a rejected message was never matched against the rules
    try:
        moment = datetime.fromisoformat(str(envelope.get("time")).replace("Z", "+00:00"))
    except ValueError:
        moment = datetime.now(UTC)
    data = envelope.get("data")
    event = Event(
        type=envelope["type"],
        id=str(envelope.get("id") or story.get("event_id") or ""),
        source=str(envelope.get("source") or ""),
        time=moment,
        data=data if isinstance(data, dict) else {},
        subject=envelope.get("subject"),
    )
    recorded = {verdict["rule"] for verdict in story.get("rules", [])}
    try:
        verdicts = runtime.index.explain(event)
    except Exception:  # a story is still worth showing without the explanation
        return story
    extra = [
        {"rule": v.rule.name, "verdict": "not_matched", "reason": v.reason, "at": None}
        for v in verdicts
        if not v.fired and v.rule.name not in recorded
    ]
    return {**story, "rules": [*story.get("rules", []), *extra]}
