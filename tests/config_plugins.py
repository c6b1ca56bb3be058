"""Small channel and job plugins for the config tests: a hand-built Registry, no plugin manager.

The config, envsubst and schema tests import it as ``from tests import config_plugins as plugins``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from router.channels.base import Channel, ChannelConfig
from router.core.durations import Duration
from router.core.message import Message, Outcome
from router.jobs.base import Job, JobContext
from router.plugins.registry import Registry


class WebhookConfig(ChannelConfig):
    url: str
    timeout: Duration = 10.0

    @field_validator("url")
    @classmethod
    def _http_only(cls, value: str) -> str:
        # Echoes the value on purpose: the loader must redact what plugin validators say.
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {value!r}")
        return value


class AppriseConfig(ChannelConfig):
    url: str


class EmailConfig(ChannelConfig):
    url: str
    to: list[str] = Field(min_length=1)


class _Base(Channel):
    async def send(self, message: Message) -> Outcome:
        return Outcome.sent()


class Discord(_Base):
    type_name = "discord"
    Config = WebhookConfig


class Slack(_Base):
    type_name = "slack"
    Config = WebhookConfig


class Email(_Base):
    type_name = "email"
    Config = EmailConfig


class Apprise(_Base):
    type_name = "apprise"
    Config = AppriseConfig


class Notify(Job):
    name = "notify"

    async def handle(self, ctx: JobContext) -> None:
        return None


class AuditWith(BaseModel):
    model_config = ConfigDict(extra="forbid")

    table: str
    retention_days: int = Field(30, ge=1)


class Audit(Job):
    name = "audit.record"
    With = AuditWith

    async def handle(self, ctx: JobContext) -> None:
        return None


def make_registry() -> Registry:
    """A registry with discord, slack, email and apprise channels and the notify and audit.record jobs."""
    channels: list[type[Channel]] = [Discord, Slack, Email, Apprise]
    jobs: list[type[Job]] = [Notify, Audit]
    return Registry(channels={c.type_name: c for c in channels}, jobs={j.name: j for j in jobs})
