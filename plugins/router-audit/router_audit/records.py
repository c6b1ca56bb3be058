"""One audit row, built from an event and the rule that matched it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from router.core.events import Event
from router_audit.filters import audit_ref

COLUMNS: tuple[str, ...] = ("event_id", "rule", "ref", "type", "source", "time", "subject", "data")
"""The columns every store writes, in this order; (event_id, rule) is the primary key."""


@dataclass(frozen=True, slots=True)
class AuditRow:
    """What ``audit.record`` stores for one (event, rule)."""

    event_id: str
    rule: str
    ref: str
    type: str
    source: str
    time: datetime
    subject: str | None
    data: dict[str, Any]

    @classmethod
    def from_event(cls, event: Event, rule: str) -> AuditRow:
        return cls(
            event_id=event.id,
            rule=rule,
            ref=audit_ref(event.id),
            type=event.type,
            source=event.source,
            time=event.time,
            subject=event.subject,
            data=event.data,
        )

    def data_json(self) -> str:
        # default=str: event data comes from JSON, but a plugin's event_received may add
        # values (datetimes, decimals) that json cannot encode on its own.
        return json.dumps(self.data, default=str, ensure_ascii=False, separators=(",", ":"))
