"""Channel plugins: the base class and the built-in channels."""

from router.channels.base import Channel, ChannelConfig
from router.core.message import Message, Outcome

__all__ = ["Channel", "ChannelConfig", "Message", "Outcome"]
