"""What the plugins registered: channel types, jobs and template filters, with who registered each."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from router.channels.base import Channel
from router.jobs.base import Job


@dataclass
class PluginInfo:
    """One loaded (or failed) plugin, as `router plugins` shows it."""

    name: str
    version: str | None = None
    source: str = "package"  # "built-in" or "package"
    channels: list[str] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)
    filters: list[str] = field(default_factory=list)
    hooks: list[str] = field(default_factory=list)
    error: str | None = None  # why it failed to load or register; the router runs without it


@dataclass
class Registry:
    """Everything registered through the hooks; built by :func:`router.plugins.manager.build_registry`."""

    channels: dict[str, type[Channel]] = field(default_factory=dict)
    jobs: dict[str, type[Job]] = field(default_factory=dict)
    filters: dict[str, Callable[..., Any]] = field(default_factory=dict)
    plugins: list[PluginInfo] = field(default_factory=list)

    @property
    def errors(self) -> list[PluginInfo]:
        """Plugins that failed to load or to register."""
        return [p for p in self.plugins if p.error]
