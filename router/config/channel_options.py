"""The options every channel accepts (``enabled``, ``concurrency``, ``rate_limit``, ``fold_when_saturated``).

Channel plugins subclass :class:`ChannelConfig` (re-exported by ``router`` and
``router.channels.base``) to add their own.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr

from router.core.durations import Duration


class RateLimit(BaseModel):
    """At most ``limit`` sends per ``period`` on one channel, across every router process."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

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

    # defer_build (inherited by every channel's Config): a channel type's validator is built when
    # a configuration first uses it, not when its module is imported (start-up of every command).
    model_config = ConfigDict(extra="forbid", defer_build=True)

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


COMMON_OPTIONS = tuple(ChannelConfig.model_fields)
"""The options every channel accepts: ``type`` and those above; a plugin's Config may not change their meaning."""


def redefined_common_options(config: type[ChannelConfig]) -> list[str]:
    """What ``config`` (a plugin's Config) changes in the meaning of an option every channel accepts.

    A Config may give such an option another default; another type or other bounds would make
    the same key mean something else for one channel type (the router reads these options
    itself), so each one found is described here, and the channel is refused at registration.
    """
    problems: list[str] = []
    for name in COMMON_OPTIONS:
        base = ChannelConfig.model_fields[name]
        field = config.model_fields.get(name)
        if field is None:
            problems.append(f"'{name}' is removed")
        elif field.annotation != base.annotation:
            problems.append(
                f"'{name}' is redefined as {_type_name(field.annotation)} (it is {_type_name(base.annotation)})"
            )
        elif field.metadata != base.metadata:
            problems.append(f"'{name}' is redefined with other bounds or validators (only its default may change)")
    return problems


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def config_secrets(config: BaseModel) -> list[str]:
    """Every ``SecretStr`` value in ``config`` (nested models, lists and mappings included).

    A channel registers them for scrubbing when it is built (router.channels.base), so a plugin's
    secret options are kept out of logs, dead letters and failure notifications like the built-ins'.
    """
    found: list[str] = []

    def walk(value: Any, depth: int) -> None:
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif depth >= 6:  # options are shallow; a deeper structure is not walked further
            return
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name, None), depth + 1)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item, depth + 1)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item, depth + 1)

    walk(config, 0)
    return [secret for secret in found if secret]
