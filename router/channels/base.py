"""What every channel plugin implements: a config model, ``send(message) -> Outcome``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field


class ChannelConfig(BaseModel):
    """Options common to every channel; plugins subclass it to add their own (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")

    type: str
    enabled: bool = Field(
        True, description="false keeps the channel configured but skips its deliveries (logged, counted)."
    )
    concurrency: int = Field(8, ge=1, le=1024, description="Sends in flight at once on this channel.")


@dataclass(frozen=True, slots=True)
class Message:
    """A rendered notification, as a channel receives it."""

    title: str
    body: str
    # Context a channel may use (webhook posts it): event id/type, rule name, and so on.
    meta: dict[str, Any] = field(default_factory=dict)


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


class Channel(ABC):
    """Base class of channel plugins.

    Subclasses set ``type_name`` and ``Config`` and implement :meth:`send`. One instance is
    built per configured channel and reused for every message, so expensive objects (HTTP
    sessions, apprise objects) are built once in ``__init__`` or lazily on first send.
    """

    type_name: ClassVar[str]
    Config: ClassVar[type[ChannelConfig]] = ChannelConfig
    # Limits the renderer truncates to (characters); None means no limit.
    max_title: ClassVar[int | None] = None
    max_body: ClassVar[int | None] = None
    # Markdown dialect for the ``escape_markdown`` filter: "discord", "slack" or None.
    markdown: ClassVar[str | None] = None

    def __init__(self, name: str, config: ChannelConfig) -> None:
        self.name = name
        self.config = config

    @abstractmethod
    async def send(self, message: Message) -> Outcome:
        """Deliver ``message``; never raise for delivery failures, return an Outcome instead."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook with a no-op default
        """Release connections; called once at shutdown or when a reload replaces the channel."""

    def describe(self) -> str:
        """A one-line, secret-free description for `router check` and logs."""
        return f"{self.name} ({self.type_name})"
