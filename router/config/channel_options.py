"""The options every channel accepts (``enabled``, ``concurrency``, ``rate_limit``, ``fold_when_saturated``).

Channel plugins subclass :class:`ChannelConfig` (re-exported by ``router`` and
``router.channels.base``) to add their own.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from router.core.durations import Duration


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
