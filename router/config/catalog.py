"""What configuration needs of the plugin registry: the option models of each channel type and job.

:class:`router.plugins.registry.Registry` satisfies :class:`Catalog`; declaring it here keeps
``config`` below the plugins layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Protocol

from pydantic import BaseModel

from router.config.channel_options import ChannelConfig


class ChannelType(Protocol):
    """A channel class, as configuration sees it: its options model."""

    Config: ClassVar[type[ChannelConfig]]


class JobType(Protocol):
    """A job class, as configuration sees it: the model of its ``with:`` options."""

    With: ClassVar[type[BaseModel]]


class Catalog(Protocol):
    """The channel types and jobs a configuration may name."""

    @property
    def channels(self) -> Mapping[str, type[ChannelType]]: ...

    @property
    def jobs(self) -> Mapping[str, type[JobType]]: ...
