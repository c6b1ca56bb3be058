"""Retry records: what a scheduled retry carries so that it can run after a restart.

A record holds the event (CloudEvents JSON), the rule and, for a delivery, the channel and the
message as rendered on the first attempt (a retry sends what the first attempt tried to send,
even if templates changed meanwhile). Records are signed when written and verified when read
(router/core/signing.py): one that does not verify raises :class:`ForgedRecord`. A job record may carry a batch of ``events`` (a digest:
the job runs once for all of them) and, in ``extra["flow"]``, how far flow control got.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from router.core.errors import DecodeError
from router.core.events import Event, decode, encode
from router.core.message import Message
from router.core.signing import ForgedRecord, ring

__all__ = ["ForgedRecord", "RecordKind", "RetryRecord"]

RecordKind = Literal["delivery", "job"]


@dataclass(slots=True)
class RetryRecord:
    """A delivery (one channel) or a job (one rule) to try again."""

    kind: RecordKind
    event: Event
    rule: str
    attempt: int  # the attempt that failed last (1-based)
    channel: str | None = None
    message: Message | None = None
    last_error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)  # a digest's batch, in order

    def to_bytes(self) -> bytes:
        """The record, signed with this process's key (router/core/signing.py)."""
        payload: dict[str, Any] = {
            "v": 1,
            "kind": self.kind,
            "event": json.loads(encode(self.event)),
            "rule": self.rule,
            "attempt": self.attempt,
            "last_error": self.last_error,
        }
        if self.channel is not None:
            payload["channel"] = self.channel
        if self.message is not None:
            payload["message"] = {"title": self.message.title, "body": self.message.body, "meta": self.message.meta}
            if self.message.payload is not None:  # a channel-native message (Discord embeds, Slack blocks)
                payload["message"]["payload"] = self.message.payload
        if self.extra:
            payload["extra"] = self.extra
        if self.events:
            payload["events"] = [json.loads(encode(event)) for event in self.events]
        return ring().sign(json.dumps(payload, separators=(",", ":"), default=str).encode())

    @classmethod
    def from_bytes(cls, body: bytes) -> RetryRecord:
        """Verify and parse a record; raises ForgedRecord (a DecodeError) when its signature does
        not verify, DecodeError when it is not a record."""
        signed = ring().open(body)
        try:
            payload = json.loads(signed)
            if not isinstance(payload, dict) or payload.get("v") != 1:
                raise DecodeError("not a version 1 retry record")
            kind = payload["kind"]
            if kind not in ("delivery", "job"):
                raise DecodeError(f"unknown retry record kind {kind!r}")
            event = decode(json.dumps(payload["event"]).encode(), content_type="application/cloudevents+json")
            message = None
            if "message" in payload:
                m = payload["message"]
                native = m.get("payload")
                message = Message(
                    title=str(m["title"]),
                    body=str(m["body"]),
                    meta=dict(m.get("meta") or {}),
                    payload=dict(native) if native is not None else None,
                )
            events = [
                decode(json.dumps(item).encode(), content_type="application/cloudevents+json")
                for item in payload.get("events") or []
            ]
            return cls(
                kind=kind,
                event=event,
                rule=str(payload["rule"]),
                attempt=int(payload["attempt"]),
                channel=payload.get("channel"),
                message=message,
                last_error=str(payload.get("last_error", "")),
                extra=dict(payload.get("extra") or {}),
                events=events,
            )
        except DecodeError:
            raise
        except (ValueError, KeyError, TypeError) as error:
            raise DecodeError(f"malformed retry record: {type(error).__name__}") from None
