"""Channel plugins: the base class and the built-in channels."""

from router.channels.base import Channel, ChannelConfig, Message, Outcome

__all__ = ["Channel", "ChannelConfig", "Message", "Outcome"]
