"""Exceptions the router raises for bad input; each carries the place it refers to."""

from __future__ import annotations

from dataclasses import dataclass, field


class RouterError(Exception):
    """Base class for errors caused by input (config, templates, events), not by bugs."""


@dataclass(frozen=True)
class Problem:
    """One located problem in a configuration file."""

    message: str
    path: str = ""  # key path such as ``rules[2].template``
    file: str | None = None
    line: int | None = None  # 1-based
    column: int | None = None  # 1-based

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file
            if self.line is not None:
                where += f":{self.line}"
                if self.column is not None:
                    where += f":{self.column}"
            where += ": "
        key = f"{self.path}: " if self.path else ""
        return f"{where}{key}{self.message}"


@dataclass
class ConfigError(RouterError):
    """The configuration is invalid; ``problems`` lists every problem found, not only the first."""

    problems: list[Problem] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(str(self))

    def __str__(self) -> str:
        count = len(self.problems)
        head = f"{count} problem{'s' if count != 1 else ''} in configuration"
        return head + ":\n" + "\n".join(f"  {p}" for p in self.problems)


class TemplateError(RouterError):
    """A template failed to load, compile or render; the message names template, line and cause."""

    def __init__(self, message: str, *, template: str | None = None, line: int | None = None) -> None:
        self.template = template
        self.line = line
        self.reason = message
        where = template or "<template>"
        if line is not None:
            where += f", line {line}"
        super().__init__(f"{where}: {message}")


class DecodeError(RouterError):
    """A message body could not be decoded into an Event (a poison message)."""


class UnknownChannelError(RouterError):
    """A job rendered for or delivered to a channel that is not configured.

    Permanent: a retry cannot configure the channel, so the job is dead-lettered at once
    (reason ``unknown-channel``) with the channel's name; fix rules.yaml, then replay it.
    """

    def __init__(self, rule: str, channel: str, known: list[str]) -> None:
        self.rule = rule
        self.channel = channel
        listing = ", ".join(sorted(known)) or "none"
        super().__init__(f"rule '{rule}': unknown channel '{channel}' (configured: {listing})")
