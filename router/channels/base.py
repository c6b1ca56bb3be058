"""What every channel plugin implements: a config model, ``send(message) -> Outcome``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from router.durations import Duration

if TYPE_CHECKING:
    from router.rich import RichPayload


class RateLimit(BaseModel):
    """At most ``limit`` sends per ``period`` on one channel, across every router process."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    limit: int = Field(ge=1, description="Sends allowed per period.")
    period: Duration = Field(gt=0, description="The period, e.g. 2s or 1m.")


UNLIMITED = RateLimit.model_construct(limit=0, period=0.0)
"""What ``rate_limit: false`` stands for: no pacing, whatever the channel type's default."""


def _false_is_unlimited(value: Any) -> Any:
    # A before-validator rather than a union with Literal[False]: a mistake inside the mapping
    # is then reported once, not once per member of the union.
    return UNLIMITED if value is False else value


class ChannelConfig(BaseModel):
    """Options common to every channel; plugins subclass it to add their own (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")

    type: str
    enabled: bool = Field(
        True, description="false keeps the channel configured but skips its deliveries (logged, counted)."
    )
    concurrency: int = Field(8, ge=1, le=1024, description="Sends in flight at once on this channel.")
    rate_limit: Annotated[RateLimit | None, BeforeValidator(_false_is_unlimited)] = Field(
        None,
        description=(
            "Send rate limit {limit, period}, shared by every router process on the same state store; "
            "default: the provider's documented limit (Discord 5 per 2s, Slack 1 per 1s), none for the "
            "other types; false turns pacing off."
        ),
    )
    fold_when_saturated: bool | None = Field(
        None,
        description=(
            "When the rate limit leaves a delivery waiting longer than a period, fold it into one summary "
            "message instead of queueing it; default: on for discord and slack, off otherwise."
        ),
    )


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
    # The provider's documented send rate, used when the channel's config sets none.
    default_rate_limit: ClassVar[RateLimit | None] = None
    # Whether deliveries fold into a summary when the channel is saturated, unless configured.
    fold_by_default: ClassVar[bool] = False
    # The pydantic model (a router.rich.RichPayload) of the channel's native message, rendered from
    # a template block named after the channel type; None: the channel takes title and body only.
    payload_model: ClassVar[type[RichPayload] | None] = None

    def __init__(self, name: str, config: ChannelConfig) -> None:
        self.name = name
        self.config = config

    @abstractmethod
    async def send(self, message: Message) -> Outcome:
        """Deliver ``message``; never raise for delivery failures, return an Outcome instead."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook with a no-op default
        """Release connections; called once at shutdown or when a reload replaces the channel."""

    def preview(self, message: Message) -> list[dict[str, Any]] | None:
        """The request bodies :meth:`send` would post for ``message``, without sending; None if unknown."""
        return None

    def describe(self) -> str:
        """A one-line, secret-free description for `router check` and logs."""
        return f"{self.name} ({self.type_name})"

    @property
    def rate_limit(self) -> RateLimit | None:
        """The send rate limit in force (see :func:`effective_rate_limit`)."""
        return effective_rate_limit(type(self), self.config)

    @property
    def folds_when_saturated(self) -> bool:
        """Whether a saturated channel folds deliveries into a summary (see :func:`effective_fold`)."""
        return effective_fold(type(self), self.config)


def effective_rate_limit(channel_class: type[Channel], config: ChannelConfig) -> RateLimit | None:
    """The configured rate limit, else the channel type's default; None when there is none (or ``false``)."""
    configured = config.rate_limit
    if configured is UNLIMITED:
        return None
    return configured if configured is not None else channel_class.default_rate_limit


def effective_fold(channel_class: type[Channel], config: ChannelConfig) -> bool:
    """``fold_when_saturated`` as configured, else the channel type's default."""
    configured = config.fold_when_saturated
    return channel_class.fold_by_default if configured is None else configured
