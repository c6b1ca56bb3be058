"""How far flow control got for one (event, rule), carried by the records that run its job later.

A job that waits for its throttle slot, runs a digest's batch, or is retried after a failure
comes back from the transport as a record; its ``extra["flow"]`` says which decisions are
already made, so none is made twice (a rate limit is not charged again, a dedupe key does not
see the event as its own repeat).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from router.config.models import Rule
from router.core.events import Event
from router.core.records import RetryRecord
from router.transports.base import H_ATTEMPTS, H_EVENT_ID, H_KIND, H_RULE

FLOW_EXTRA = "flow"

Stage = Literal["waiting", "admitted"]


@dataclass(frozen=True, slots=True)
class Resume:
    """``waiting``: a throttled job for the slot at epoch ``slot``. ``admitted``: every decision
    is made and the job runs; for a digest, on ``events``."""

    stage: Stage
    slot: float = 0.0
    events: tuple[Event, ...] = ()

    @classmethod
    def from_record(cls, record: RetryRecord) -> Resume | None:
        """The state a job record carries; None for a record written without flow control."""
        flow = record.extra.get(FLOW_EXTRA)
        if not isinstance(flow, dict):
            return cls("admitted", events=tuple(record.events)) if record.events else None
        stage: Stage = "waiting" if flow.get("stage") == "waiting" else "admitted"
        try:
            slot = float(flow.get("slot") or 0.0)
        except (TypeError, ValueError):
            slot = 0.0
        return cls(stage, slot, tuple(record.events))

    def record(self, event: Event, rule: Rule | str, attempt: int, last_error: str = "") -> RetryRecord:
        """A job record that runs ``rule`` for ``event`` again from this point."""
        flow: dict[str, Any] = {"stage": self.stage}
        if self.stage == "waiting":
            flow["slot"] = self.slot
        name = rule if isinstance(rule, str) else rule.name
        return RetryRecord(
            kind="job",
            event=event,
            rule=name,
            attempt=attempt,
            last_error=last_error,
            extra={FLOW_EXTRA: flow},
            events=list(self.events),
        )


ADMITTED = Resume("admitted")


def job_headers(event: Event, rule: str, attempt: int) -> dict[str, object]:
    """Transport headers of a job record (what `router dlq list` shows)."""
    return {H_KIND: "job", H_EVENT_ID: event.id, H_RULE: rule, H_ATTEMPTS: attempt}
