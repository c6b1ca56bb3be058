"""notification-router: route domain events to people through declarative rules.

The public API for plugin authors and embedders is re-exported here.
"""

from router.channels.base import Channel, ChannelConfig
from router.config.job_options import ChannelRef
from router.core.delivery import Delivery
from router.core.errors import ConfigError, DecodeError, Problem, RouterError, TemplateError, UnknownChannelError
from router.core.events import Event
from router.core.message import Message, Outcome
from router.core.version import __version__
from router.ingest.publisher import Publisher, PublishError
from router.jobs.base import Job, JobContext, JobState, NoOptions
from router.plugins.hookspecs import hookimpl

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
