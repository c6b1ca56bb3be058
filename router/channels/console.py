"""Print each message to the terminal: for trying rules out and for development."""

from __future__ import annotations

import sys
import threading
from typing import ClassVar, Literal, TextIO

from pydantic import Field

from router.channels.base import Channel, ChannelConfig
from router.core.message import Message, Outcome


class ConsoleConfig(ChannelConfig):
    """Options of a ``console`` channel: ``{type: console, stream: stdout}`` (or ``stderr``)."""

    stream: Literal["stdout", "stderr"] = Field("stdout", description="Where messages are printed.")


# One lock for every console channel: messages from concurrent sends never interleave.
_write_lock = threading.Lock()


class ConsoleChannel(Channel):
    """Prints a header line naming the channel, then the title and the body."""

    type_name: ClassVar[str] = "console"
    Config: ClassVar[type[ChannelConfig]] = ConsoleConfig

    config: ConsoleConfig

    def __init__(self, name: str, config: ChannelConfig) -> None:
        if not isinstance(config, ConsoleConfig):
            raise TypeError(f"ConsoleChannel needs a ConsoleConfig, got {type(config).__name__}")
        super().__init__(name, config)

    def _stream(self) -> TextIO:
        # Looked up at each send, so redirections (and pytest's capture) apply.
        return sys.stderr if self.config.stream == "stderr" else sys.stdout

    def format(self, message: Message) -> str:
        """The text printed for ``message``."""
        lines = [f"=== {self.name} ==="]
        if message.title:
            lines.append(message.title)
        if message.body:
            lines.append(message.body.rstrip("\n"))
        return "\n".join(lines) + "\n"

    async def send(self, message: Message) -> Outcome:
        """Print ``message``; a closed or broken stream is a permanent failure."""
        text = self.format(message)
        stream = self._stream()
        try:
            with _write_lock:
                stream.write(text)
                stream.flush()
        except (OSError, ValueError) as exc:  # ValueError: I/O on a closed file
            return Outcome.permanent(f"cannot write to {self.config.stream} ({type(exc).__name__})")
        return Outcome.sent()

    def describe(self) -> str:
        return f"{self.name} (console, {self.config.stream})"
