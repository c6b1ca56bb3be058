"""The default plugin: the built-in channels, the ``notify`` job and the built-in template filters.

It is registered as ``router.plugins.defaults`` through the same hooks as any installed plugin, so
``router plugins`` lists it and a third-party plugin cannot tell it apart.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

from router.plugins.hookspecs import hookimpl

log = logging.getLogger("router.plugins")

BUILTIN_CHANNELS: tuple[tuple[str, str], ...] = (
    ("router.channels.console", "ConsoleChannel"),
    ("router.channels.webhook", "WebhookChannel"),
    ("router.channels.discord", "DiscordChannel"),
    ("router.channels.slack", "SlackChannel"),
    ("router.channels.email", "EmailChannel"),
    ("router.channels.apprise.url", "AppriseChannel"),
)
"""(module, class) of every built-in channel type."""


def _load(module: str, attribute: str) -> Any | None:
    # Imported lazily so that a channel whose module (or optional dependency) is broken costs
    # only that channel, and so that importing the plugin manager stays cheap.
    try:
        return getattr(importlib.import_module(module), attribute)
    except Exception as exc:
        log.warning("built-in %s.%s is unavailable and was skipped: %s: %s", module, attribute, type(exc).__name__, exc)
        return None


@hookimpl
def register_channels(register: Callable[[type[Any]], None]) -> None:
    """Register console, webhook, discord, slack, email and apprise."""
    for module, name in BUILTIN_CHANNELS:
        cls = _load(module, name)
        if cls is not None:
            register(cls)


@hookimpl
def register_jobs(register: Callable[[type[Any]], None]) -> None:
    """Register the ``notify`` job."""
    from router.jobs.notify import NotifyJob

    register(NotifyJob)


@hookimpl
def register_template_filters(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Register :data:`router.templating.filters.BUILTIN_FILTERS`."""
    filters = _load("router.templating.filters", "BUILTIN_FILTERS")
    for name, function in (filters or {}).items():
        register(name, function)
