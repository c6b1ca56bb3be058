"""Discord, through an incoming webhook, sent by apprise.

Limits enforced here (Discord rejects larger messages): plain content 2,000 characters
(title line included); embed title 256, embed description 4,096. Longer text is cut and
ends in "…".

A template with a ``{% block discord %}`` gives the whole message instead (content, embeds with
fields, author, footer, images: :mod:`router.templating.native.discord`, which enforces Discord's limits);
the channel's ``username``/``avatar_url``/thread still apply unless the block sets its own, and
its ``color`` colours embeds that set none.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar
from urllib.parse import parse_qsl, quote, unquote, urlencode

from pydantic import BaseModel, ConfigDict, Field, field_validator

from router.channels.apprise.base import AppriseBackedChannel, AppriseChannelConfig, truncate, wrong_type_hint
from router.channels.base import ChannelConfig, RateLimit, imported_on_use
from router.channels.mentions import DiscordMentions, discord_finalize
from router.core.message import Message
from router.templating.native import RichPayload

CONTENT_LIMIT = 2000
EMBED_TITLE_LIMIT = 256
EMBED_DESCRIPTION_LIMIT = 4096

_HTTPS = re.compile(
    r"^https://(?:(?:ptb|canary)\.)?discord(?:app)?\.com/api(?:/v\d+)?/webhooks/"
    r"(?P<id>\d+)/(?P<token>[A-Za-z0-9_-]+)/?(?:\?(?P<query>.*))?$"
)
_NATIVE = re.compile(r"^discord://(?:(?P<user>[^@/?]+)@)?(?P<id>\d+)/(?P<token>[A-Za-z0-9_-]+)/?(?:\?(?P<query>.*))?$")
_COLOR = re.compile(r"^#?(?P<hex>[0-9A-Fa-f]{6})$")
_ROUTING_KEYS = ("tts", "wait", "flags", "username", "avatar_url")


@dataclass(frozen=True)
class DiscordWebhook:
    """The parts of a Discord webhook URL."""

    webhook_id: str
    token: str
    username: str | None = None
    query: dict[str, str] = field(default_factory=dict)


def parse_discord_url(url: str) -> DiscordWebhook:
    """Parse ``https://discord.com/api/webhooks/ID/TOKEN`` (also discordapp.com) or ``discord://[name@]ID/TOKEN[?opts]``.

    Raises ValueError with a message that never repeats the URL (it holds the token).
    """
    text = url.strip()
    match = _HTTPS.match(text)
    if match:
        query = dict(parse_qsl(match.group("query") or ""))
        if "thread_id" in query:  # Discord's own parameter; apprise names it `thread`
            query["thread"] = query.pop("thread_id")
        query.pop("wait", None)
        return DiscordWebhook(match.group("id"), match.group("token"), None, query)
    match = _NATIVE.match(text)
    if match:
        user = unquote(match.group("user")) if match.group("user") else None
        query = dict(parse_qsl(match.group("query") or ""))
        return DiscordWebhook(match.group("id"), match.group("token"), user, query)
    raise ValueError(
        "expected a Discord webhook URL: https://discord.com/api/webhooks/ID/TOKEN or discord://ID/TOKEN"
        + wrong_type_hint(text, "discord")
    )


class EmbedAuthor(BaseModel):
    """The author line of an embed: ``{name, url?, icon_url?}``."""

    model_config = ConfigDict(extra="forbid", defer_build=True)  # built when a channel sets `author`

    name: str = Field(min_length=1, max_length=256)
    url: str | None = None
    icon_url: str | None = None

    @field_validator("url", "icon_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("must be an http(s) URL")
        return value


class DiscordConfig(AppriseChannelConfig):
    """Options of a ``discord`` channel::

    discord-general:
      type: discord
      url: "${DISCORD_WEBHOOK_URL}"   # https://discord.com/api/webhooks/ID/TOKEN
      username: Router                # optional: the webhook's own name otherwise
      avatar_url: https://example.com/bot.png
      color: "#5865F2"                # embed colour
      author: {name: Ops, url: https://ops.example.com, icon_url: https://example.com/ops.png}  # optional
      embeds: true                    # false: plain "title\nbody" content
      fields: false                   # true: markdown headings become embed fields
      mentions:                       # optional: who may be pinged; nobody by default
        users: ["123456789012345678"]
        roles: []
        everyone: false
      timeout: 10s
    """

    url: str = Field(
        description=(
            "Webhook URL: https://discord.com/api/webhooks/ID/TOKEN (discordapp.com too) or apprise's "
            "discord://ID/TOKEN, whose ?options (thread, tts, ping, ...) are passed to apprise."
        )
    )
    username: str | None = Field(None, min_length=1, max_length=80, description="Overrides the webhook's name.")
    avatar_url: str | None = Field(None, description="Image URL that overrides the webhook's avatar.")
    color: str | None = Field(
        None, description="Embed colour, '#5865F2' or a number; default: apprise's blue for info messages."
    )
    author: EmbedAuthor | None = Field(
        None,
        description=(
            "The author line of a plain message's embed (name, optional url and icon_url); default: none."
            " A template's {% block discord %} sets its own."
        ),
    )
    embeds: bool = Field(
        True,
        description=(
            "true: the title and body are sent as an embed (title up to 256 characters, description up to "
            "4,096); false: as plain content, 'title\\nbody', up to 2,000 characters."
        ),
    )
    fields: bool = Field(
        False,
        description=(
            "With embeds: turn each markdown heading ('# Name') of the body and the text under it into an "
            "embed field, as apprise does; false keeps the body whole in the description."
        ),
    )
    mentions: DiscordMentions | None = Field(
        None,
        description=(
            "Who a message may ping: users and roles by ID, everyone: true for @everyone/@here. Default: "
            "nobody; mentions are never taken from the rendered text (every post carries allowed_mentions)."
        ),
    )

    @field_validator("url")
    @classmethod
    def _valid_url(cls, value: str) -> str:
        if "ping" in parse_discord_url(value).query:
            raise ValueError(
                "the discord:// option ping= is not supported: list who may be pinged in the channel's "
                "`mentions` option and write the mention in the template"
            )
        return value.strip()

    @field_validator("avatar_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("avatar_url must be an http(s) URL")
        return value

    @field_validator("color", mode="before")
    @classmethod
    def _valid_color(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            if not 0 <= value <= 0xFFFFFF:
                raise ValueError("color must be between 0 and 16777215 (0xFFFFFF)")
            return f"#{value:06X}"
        if isinstance(value, str):
            match = _COLOR.match(value.strip())
            if match:
                return "#" + match.group("hex").upper()
        raise ValueError("color must be a hex colour like '#5865F2' or a number")


class DiscordChannel(AppriseBackedChannel):
    """Posts to a Discord webhook, as an embed or as plain content."""

    type_name: ClassVar[str] = "discord"
    Config: ClassVar[type[ChannelConfig]] = DiscordConfig
    max_title: ClassVar[int | None] = EMBED_TITLE_LIMIT
    # The renderer cuts to the class limits, so they are those of the roomiest mode (embeds);
    # send() cuts plain content further, to 2,000 with the title.
    max_body: ClassVar[int | None] = EMBED_DESCRIPTION_LIMIT
    markdown: ClassVar[str | None] = "discord"
    # Discord: 5 requests per 2 s per webhook (the provider's documented limit).
    default_rate_limit: ClassVar[RateLimit | None] = RateLimit(limit=5, period=2.0)
    fold_by_default: ClassVar[bool] = True
    payload_model: ClassVar[type[RichPayload] | None] = imported_on_use(
        "router.templating.native.discord", "DiscordMessage"
    )
    payload_argument: ClassVar[int | None] = 0  # NotifyDiscord._send(payload, attach=None, params=None, ...)
    apprise_plugin: ClassVar[tuple[str, str] | None] = ("apprise.plugins.discord", "NotifyDiscord")

    config: DiscordConfig

    def __init__(self, name: str, config: ChannelConfig) -> None:
        if not isinstance(config, DiscordConfig):
            raise TypeError(f"DiscordChannel needs a DiscordConfig, got {type(config).__name__}")
        self.webhook = parse_discord_url(config.url)
        super().__init__(name, config)

    def secrets(self) -> list[str]:
        return [self.webhook.token]

    def apprise_urls(self) -> list[tuple[str, list[str]]]:
        hook, cfg = self.webhook, self.config
        # `thread` would make apprise switch to embeds whatever `embeds` says: set it in tune().
        params: dict[str, str] = {"avatar": "no", **{k: v for k, v in hook.query.items() if k != "thread"}}
        params["format"] = "markdown" if cfg.embeds else "text"  # apprise builds an embed for markdown
        params["fields"] = "yes" if cfg.fields else "no"
        if cfg.avatar_url:
            params["avatar"] = "yes"
            params["avatar_url"] = cfg.avatar_url
        username = cfg.username or hook.username
        user = f"{quote(username, safe='')}@" if username else ""
        return [(f"discord://{user}{hook.webhook_id}/{hook.token}/?{urlencode(params)}", [])]

    def asset_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self.config.color:
            import apprise

            options["html_notify_map"] = {kind: self.config.color for kind in apprise.NotifyType}
        if self.config.username:
            options["app_id"] = self.config.username  # apprise's sender name (User-Agent)
        return options

    def _wrap_send(self, original: Callable[..., Any]) -> Callable[..., Any]:
        inner = super()._wrap_send(original)

        def send(*args: Any, **kwargs: Any) -> Any:
            # Apprise signs every embed it builds with its own author line (its app name and
            # GitHub URL): a plain message carries the channel's `author`, or none.
            built = args[0] if args else kwargs.get("payload")
            if isinstance(built, dict):
                for embed in built.get("embeds") or ():
                    if isinstance(embed, dict):
                        embed.pop("author", None)
                        if self.config.author is not None:
                            embed["author"] = self.config.author.model_dump(exclude_none=True)
            return inner(*args, **kwargs)

        return send

    def tune(self, plugin: Any) -> None:
        # Apprise waits out Discord's rate-limit window plus 10s of assumed clock skew; with
        # NTP-synced clocks one second is plenty, and it holds one of our threads meanwhile.
        if hasattr(plugin, "clock_skew"):
            plugin.clock_skew = timedelta(seconds=1)
        if "thread" in self.webhook.query:
            plugin.thread_id = self.webhook.query["thread"]

    def prepare(self, message: Message) -> tuple[str, str]:
        title = truncate(message.title.strip(), EMBED_TITLE_LIMIT)
        body = message.body.rstrip()
        if self.config.embeds:
            return title, truncate(body, EMBED_DESCRIPTION_LIMIT)
        # Apprise sends plain content as "title\r\nbody".
        budget = CONTENT_LIMIT - (len(title) + 2 if title else 0)
        return title, truncate(body, budget)

    def native_payload(self, message: Message) -> dict[str, Any]:
        payload = super().native_payload(message)
        if self.config.color:
            color = int(self.config.color.lstrip("#"), 16)
            for embed in payload.get("embeds") or ():
                if isinstance(embed, dict):
                    embed.setdefault("color", color)
        return payload

    def finalize_post(self, body: dict[str, Any], *, native: bool) -> dict[str, Any]:
        if not native and self.config.embeds:
            # With embeds apprise's `content` is only its "👉 @..." line of mentions it found in the text.
            body.pop("content", None)
        return discord_finalize(body, self.config.mentions)

    def merge_native(self, built: dict[str, Any], native: dict[str, Any]) -> dict[str, Any]:
        # Apprise's body carries the webhook options (username, avatar, tts); its content/embeds go.
        kept = {key: built[key] for key in _ROUTING_KEYS if key in built}
        return {**kept, **native}

    def describe(self) -> str:
        mode = "embeds" if self.config.embeds else "plain content"
        return f"{self.name} (discord webhook {self.webhook.webhook_id}, {mode})"
