"""Slack, through an incoming webhook (or a bot token), sent by apprise.

Limits enforced here (Slack rejects larger blocks): with Block Kit, header 150 characters
and section text 3,000; without, the whole message 40,000. Lengths are counted after the
HTML escaping Slack requires (``&`` becomes ``&amp;``). Longer text is cut and ends in "…".

A template with a ``{% block slack %}`` gives the whole message instead (text, Block Kit
blocks, attachments: :mod:`router.templating.native.slack`, which enforces Slack's limits); the channel's
``channel``/``username`` still apply unless the block sets its own, and the rendered title
(or first body line) becomes the notification ``text`` when the block gives none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import parse_qsl, quote, unquote, urlencode

from pydantic import Field, field_validator

from router.channels.apprise.base import (
    AppriseBackedChannel,
    AppriseChannelConfig,
    truncate,
    truncate_measured,
    wrong_type_hint,
)
from router.channels.base import ChannelConfig, RateLimit, imported_on_use
from router.channels.mentions import SlackMentions, neutralise_slack
from router.core.message import Message
from router.templating.native import RichPayload

HEADER_LIMIT = 150
SECTION_LIMIT = 3000
MESSAGE_LIMIT = 40_000

_HTTPS = re.compile(
    r"^https://hooks\.slack(?P<gov>-gov)?\.com/services/"
    r"(?P<a>[A-Za-z0-9]+)/(?P<b>[A-Za-z0-9]+)/(?P<c>[A-Za-z0-9]+)/?$"
)
_NATIVE = re.compile(r"^slack://(?:(?P<user>[^@/?]+)@)?(?P<path>[^?]*?)/?(?:\?(?P<query>.*))?$")
_TOKEN = re.compile(r"^[A-Za-z0-9]+$")
_BOT_TOKEN = re.compile(r"^(?:xoxe\.)?xox[abp]-[A-Za-z0-9-]+$")
_CHANNEL = re.compile(r"^[+#@]?[A-Za-z0-9_.-]{1,80}(?::[0-9.]+)?$")
_ROUTING_KEYS = ("channel", "thread_ts", "username", "icon_url")


def escaped_cost(char: str) -> int:
    """Characters ``char`` takes once Slack-escaped (``&amp;``, ``&lt;``, ``&gt;``)."""
    return {"&": 5, "<": 4, ">": 4}.get(char, 1)


@dataclass(frozen=True)
class SlackWebhook:
    """The parts of a Slack webhook URL, or of a bot-token URL."""

    tokens: tuple[str, ...]  # (A, B, C) for a webhook; (xoxb-...,) for a bot token
    targets: tuple[str, ...] = ()
    username: str | None = None
    query: dict[str, str] = field(default_factory=dict)
    gov: bool = False


def parse_slack_url(url: str) -> SlackWebhook:
    """Parse ``https://hooks.slack.com/services/A/B/C``, ``slack://[name@]A/B/C[/#channel]`` or
    ``slack://xoxb-TOKEN/#channel``. Raises ValueError with a message that never repeats the URL."""
    text = url.strip()

    def problem() -> ValueError:  # built only for a URL that is wrong: the hint compiles patterns
        return ValueError(
            "expected a Slack incoming-webhook URL: https://hooks.slack.com/services/T.../B.../XXXX"
            " or slack://T.../B.../XXXX" + wrong_type_hint(text, "slack")
        )

    match = _HTTPS.match(text)
    if match:
        return SlackWebhook((match.group("a"), match.group("b"), match.group("c")), gov=bool(match.group("gov")))
    match = _NATIVE.match(text)
    if not match:
        raise problem()
    # In apprise's slack:// syntax '#' starts a channel name, not a URL fragment.
    segments = [unquote(s) for s in re.split(r"/+", match.group("path")) if s]
    user = unquote(match.group("user")) if match.group("user") else None
    query = dict(parse_qsl(match.group("query") or ""))
    if segments and _BOT_TOKEN.match(segments[0]):
        return SlackWebhook((segments[0],), tuple(segments[1:]), user, query)
    if len(segments) >= 3 and all(_TOKEN.match(s) for s in segments[:3]):
        return SlackWebhook(tuple(segments[:3]), tuple(segments[3:]), user, query)
    raise problem()


class SlackConfig(AppriseChannelConfig):
    """Options of a ``slack`` channel::

    slack-ops:
      type: slack
      url: "${SLACK_WEBHOOK_URL}"     # https://hooks.slack.com/services/T.../B.../XXXX
      username: Router
      icon: https://example.com/bot.png
      channel: "#ops"                 # only where the app may post elsewhere than its default
      blocks: true                    # false: a classic attachment
      mentions: {users: [U0123ABCD]}  # optional: who may be pinged; nobody by default
      timeout: 10s
    """

    url: str = Field(
        description=(
            "Incoming-webhook URL https://hooks.slack.com/services/T.../B.../XXXX, or apprise's "
            "slack://T.../B.../XXXX[/#channel] or slack://xoxb-BOT-TOKEN/#channel."
        )
    )
    username: str | None = Field(None, min_length=1, max_length=80, description="Overrides the sender's name.")
    icon: str | None = Field(
        None, description="Image URL shown as the sender's icon (with blocks, apprise adds a small footer with it)."
    )
    channel: str | None = Field(
        None, description="'#channel', '@user' or a channel ID, where the app allows overriding the webhook's."
    )
    blocks: bool = Field(
        True,
        description=(
            "true: Block Kit, a header block (title, 150 characters) and a section (body, 3,000); "
            "false: a classic attachment, title and text, 40,000 characters in all."
        ),
    )
    mentions: SlackMentions | None = Field(
        None,
        description=(
            "Who a message may ping: users (U...) and user groups (roles: S...) by ID, everyone: true for "
            "<!channel>/<!here>/<!everyone>. Default: nobody; any other mention markup in the text is escaped."
        ),
    )

    @field_validator("url")
    @classmethod
    def _valid_url(cls, value: str) -> str:
        parse_slack_url(value)
        return value.strip()

    @field_validator("icon")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/{}]+[^\s{}]*$", value):
            raise ValueError("icon must be an http(s) image URL (Slack emoji names are not supported by apprise)")
        return value

    @field_validator("channel")
    @classmethod
    def _valid_channel(cls, value: str | None) -> str | None:
        if value is not None and not _CHANNEL.match(value):
            raise ValueError("channel must look like '#general', '@user' or a channel ID")
        return value


class SlackChannel(AppriseBackedChannel):
    """Posts to Slack with Block Kit (default) or a classic attachment."""

    type_name: ClassVar[str] = "slack"
    Config: ClassVar[type[ChannelConfig]] = SlackConfig
    max_title: ClassVar[int | None] = HEADER_LIMIT
    # The renderer cuts to the class limits, so they are those of the roomiest mode; send()
    # cuts a Block Kit section further, to 3,000.
    max_body: ClassVar[int | None] = MESSAGE_LIMIT
    markdown: ClassVar[str | None] = "slack"
    # Slack: 1 message per second per incoming webhook (the provider's documented limit).
    default_rate_limit: ClassVar[RateLimit | None] = RateLimit(limit=1, period=1.0)
    fold_by_default: ClassVar[bool] = True
    payload_model: ClassVar[type[RichPayload] | None] = imported_on_use(
        "router.templating.native.slack", "SlackMessage"
    )
    payload_argument: ClassVar[int | None] = 1  # NotifySlack._send(url, payload, attach=None, ...)
    apprise_plugin: ClassVar[tuple[str, str] | None] = ("apprise.plugins.slack", "NotifySlack")
    preview_result: ClassVar[Any] = {"ok": True}

    config: SlackConfig

    def __init__(self, name: str, config: ChannelConfig) -> None:
        if not isinstance(config, SlackConfig):
            raise TypeError(f"SlackChannel needs a SlackConfig, got {type(config).__name__}")
        self.webhook = parse_slack_url(config.url)
        super().__init__(name, config)

    def secrets(self) -> list[str]:
        return list(self.webhook.tokens)

    def apprise_urls(self) -> list[tuple[str, list[str]]]:
        hook, cfg = self.webhook, self.config
        params: dict[str, str] = {**hook.query}
        params["blocks"] = "yes" if cfg.blocks else "no"
        params["image"] = "yes" if cfg.icon else "no"
        # Apprise puts the icon of a Block Kit message in its footer only.
        params["footer"] = "yes" if (cfg.icon and cfg.blocks) else "no"
        params["timestamp"] = "no"
        if hook.gov:
            params["mode"] = "gov-hook"
        targets = (cfg.channel,) if cfg.channel else hook.targets
        path = "/".join(quote(part, safe="") for part in (*hook.tokens, *targets))
        username = cfg.username or hook.username
        user = f"{quote(username, safe='')}@" if username else ""
        return [(f"slack://{user}{path}/?{urlencode(params)}", [])]

    def asset_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self.config.icon:
            # Apprise builds image URLs from this mask; a plain URL is used as it is.
            options["image_url_mask"] = self.config.icon
        if self.config.username:
            options["app_id"] = self.config.username  # the footer's text
        return options

    def prepare(self, message: Message) -> tuple[str, str]:
        title = truncate_measured(message.title.strip(), HEADER_LIMIT, escaped_cost)
        body = message.body.rstrip()
        if self.config.blocks:
            # The section carries the body verbatim (mrkdwn), so plain length counts.
            return title, truncate(body, SECTION_LIMIT)
        budget = MESSAGE_LIMIT - sum(escaped_cost(c) for c in title)
        return title, truncate_measured(body, budget, escaped_cost)

    def native_payload(self, message: Message) -> dict[str, Any]:
        from router.templating.native.slack import TEXT_LIMIT

        payload = super().native_payload(message)
        if not payload.get("text"):
            # Slack shows `text` in notifications and screen readers when a message has blocks.
            fallback = message.title.strip() or next(iter(message.body.strip().splitlines()), "")
            if fallback:
                payload = {"text": truncate(fallback, TEXT_LIMIT), **payload}
        return payload

    def finalize_post(self, body: dict[str, Any], *, native: bool) -> dict[str, Any]:
        result: dict[str, Any] = neutralise_slack(body, self.config.mentions)
        return result

    def is_message_post(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        # The message is posted as _send(url, payload); uploads and their lookups pass more.
        return len(args) == 2 and not kwargs

    def merge_native(self, built: dict[str, Any], native: dict[str, Any]) -> dict[str, Any]:
        # Apprise's body carries where it goes (channel, thread) and who sends it; its blocks go.
        kept = {key: built[key] for key in _ROUTING_KEYS if key in built}
        return {**kept, **native}

    def describe(self) -> str:
        mode = "Block Kit" if self.config.blocks else "attachment"
        kind = "bot" if len(self.webhook.tokens) == 1 else "webhook"
        return f"{self.name} (slack {kind}, {mode})"
