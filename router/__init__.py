"""notification-router: route domain events to people through declarative rules.

The public API for plugin authors and embedders is re-exported here. The re-exports are
lazy (module ``__getattr__``): ``import router`` alone loads nothing heavy, so ``router
--help`` and ``router --version`` start in a few tens of milliseconds, while
``from router import Publisher, Channel`` works as before.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from router.core.version import __version__

if TYPE_CHECKING:  # what the lazy names below resolve to, for type checkers and editors
    from router.channels.base import Channel, ChannelConfig
    from router.config.job_options import ChannelRef
    from router.core.delivery import Delivery
    from router.core.errors import ConfigError, DecodeError, Problem, RouterError, TemplateError, UnknownChannelError
    from router.core.events import Event
    from router.core.message import Message, Outcome
    from router.ingest.publisher import Publisher, PublishError
    from router.jobs.base import Job, JobContext, JobState, NoOptions
    from router.plugins.hookspecs import hookimpl

# public name -> the module that defines it
_LAZY: dict[str, str] = {
    "Channel": "router.channels.base",
    "ChannelConfig": "router.channels.base",
    "ChannelRef": "router.config.job_options",
    "ConfigError": "router.core.errors",
    "DecodeError": "router.core.errors",
    "Delivery": "router.core.delivery",
    "Event": "router.core.events",
    "Job": "router.jobs.base",
    "JobContext": "router.jobs.base",
    "JobState": "router.jobs.base",
    "Message": "router.core.message",
    "NoOptions": "router.jobs.base",
    "Outcome": "router.core.message",
    "Problem": "router.core.errors",
    "PublishError": "router.ingest.publisher",
    "Publisher": "router.ingest.publisher",
    "RouterError": "router.core.errors",
    "TemplateError": "router.core.errors",
    "UnknownChannelError": "router.core.errors",
    "hookimpl": "router.plugins.hookspecs",
}


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use, then cache the name in this module."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'router' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "Channel",
    "ChannelConfig",
    "ChannelRef",
    "ConfigError",
    "DecodeError",
    "Delivery",
    "Event",
    "Job",
    "JobContext",
    "JobState",
    "Message",
    "NoOptions",
    "Outcome",
    "Problem",
    "PublishError",
    "Publisher",
    "RouterError",
    "TemplateError",
    "UnknownChannelError",
    "__version__",
    "hookimpl",
]
