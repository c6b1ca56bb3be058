"""What a channel receives (:class:`Message`) and what it answers (:class:`Outcome`).

Plain data shared by every layer; channel plugins import them from ``router`` or
``router.channels.base``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class Message:
    """A rendered notification, as a channel receives it."""

    title: str
    body: str
    # Context a channel may use (webhook posts it): event id/type, rule name, and so on.
    meta: dict[str, Any] = field(default_factory=dict)
    # The channel-native message a template's `{% block <channel type> %}` described (Discord
    # embeds, Slack blocks), validated against the channel's ``payload_model``; None: title/body only.
    payload: dict[str, Any] | None = None


OutcomeStatus = Literal["sent", "retry", "failed", "skipped"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one send: sent, retryable (with an optional retry-after) or permanently failed.

    ``skipped`` is set by the router, not by channels: nothing was sent and nothing needs to be
    (already sent before a redelivery, channel disabled).

    ``reason`` is shown in logs, metrics and the dead-letter queue: it never contains a secret.
    """

    status: OutcomeStatus
    reason: str = ""
    retry_after: float | None = None  # seconds, when the provider said how long to wait

    @classmethod
    def sent(cls, reason: str = "") -> Outcome:
        return cls("sent", reason)

    @classmethod
    def retryable(cls, reason: str, retry_after: float | None = None) -> Outcome:
        return cls("retry", reason, retry_after)

    @classmethod
    def permanent(cls, reason: str) -> Outcome:
        return cls("failed", reason)

    @property
    def ok(self) -> bool:
        return self.status == "sent"
