"""A delivery: one (event, rule, channel) unit, retried and dead-lettered on its own."""

from __future__ import annotations

from dataclasses import dataclass

from router.core.events import Event
from router.core.message import Message


@dataclass(slots=True)
class Delivery:
    """One rendered message on its way to one channel for one (event, rule)."""

    event: Event
    rule: str
    channel: str
    channel_type: str
    message: Message
    attempt: int = 1  # 1 for the first send

    @property
    def key(self) -> str:
        """The idempotency key: a delivery with this key that was sent is never sent again."""
        return f"{self.event.key}:{self.rule}:{self.channel}"
