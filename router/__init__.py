"""notification-router: route domain events to people through declarative rules.

The public API for plugin authors and embedders is re-exported here.
"""

from router.channels.base import Channel, ChannelConfig
from router.core.delivery import Delivery
from router.core.errors import ConfigError, DecodeError, Problem, RouterError, TemplateError
from router.core.events import Event
from router.core.message import Message, Outcome
from router.core.version import __version__
from router.ingest.publisher import Publisher, PublishError
from router.jobs.base import Job, JobContext, NoOptions
from router.plugins.hookspecs import hookimpl

__all__ = [
    "Channel",
    "ChannelConfig",
    "ConfigError",
    "DecodeError",
    "Delivery",
    "Event",
    "Job",
    "JobContext",
    "Message",
    "NoOptions",
    "Outcome",
    "Problem",
    "PublishError",
    "Publisher",
    "RouterError",
    "TemplateError",
    "__version__",
    "hookimpl",
]
