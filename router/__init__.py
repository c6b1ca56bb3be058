"""notification-router: route domain events to people through declarative rules.

The public API for plugin authors and embedders is re-exported here.
"""

from router.channels.base import Channel, ChannelConfig, Message, Outcome
from router.delivery import Delivery
from router.errors import ConfigError, DecodeError, Problem, RouterError, TemplateError
from router.events import Event
from router.hookspecs import hookimpl
from router.jobs.base import Job, JobContext, NoOptions
from router.publisher import Publisher, PublishError

__version__ = "0.1.0"

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
