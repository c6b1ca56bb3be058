"""What every channel plugin implements: a config model, ``send(message) -> Outcome``."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from router.config.channel_options import UNLIMITED as UNLIMITED  # re-exported: the plugin API
from router.config.channel_options import ChannelConfig as ChannelConfig
from router.config.channel_options import RateLimit as RateLimit
from router.config.channel_options import config_secrets
from router.core.message import Message as Message  # re-exported: the plugin API
from router.core.message import Outcome as Outcome
from router.core.message import OutcomeStatus as OutcomeStatus
from router.core.redact import register_secrets

if TYPE_CHECKING:
    from router.templating.native import RichPayload


class _ImportedOnUse:
    """A class attribute that imports the object it names when it is read."""

    def __init__(self, module: str, name: str) -> None:
        self.module = module
        self.name = name

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        return getattr(importlib.import_module(self.module), self.name)


def imported_on_use(module: str, name: str) -> Any:
    """A class attribute whose value, ``module.name``, is imported when the attribute is first read.

    For the built-in channels' ``payload_model``: their pydantic models are needed only to render a
    rich block, and importing them costs every command that loads the channels (`router check`).
    """
    return _ImportedOnUse(module, name)


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
    # The pydantic model (a router.templating.native.RichPayload) of the channel's native message, rendered from
    # a template block named after the channel type; None: the channel takes title and body only.
    payload_model: ClassVar[type[RichPayload] | None] = None

    def __init__(self, name: str, config: ChannelConfig) -> None:
        self.name = name
        self.config = config
        # Secret options (pydantic SecretStr, a plugin's included) are scrubbed from logs and
        # dead letters from here on, as the built-ins' own secrets are.
        register_secrets(*config_secrets(config))

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
