"""Discord and Slack, the two chat webhooks, run through the same wire tests.

Each test here is one test for both channels: what differs is the webhook URL, the host the
fake answers for and the provider's own replies. What only one of them does (embeds, Block
Kit, limits, native URLs) stays in test_channels_discord.py and test_channels_slack.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import ValidationError

from router.channels.base import Channel, ChannelConfig
from router.channels.discord import DiscordChannel, DiscordConfig
from router.channels.slack import SlackChannel, SlackConfig
from router.core.message import Message, Outcome
from tests.fakes import intercept
from tests.fakes.http_sink import HttpSink, Reply, free_port


@dataclass(frozen=True)
class Chat:
    """One chat channel type as these tests drive it."""

    type: str
    name: str  # the configured channel's name
    channel: type[Channel]
    config: type[ChannelConfig]
    url: str
    hosts: tuple[str, ...]  # what the fake answers for
    ok: Reply  # what the provider answers to a good request

    def __str__(self) -> str:
        return self.type


DISCORD = Chat(
    "discord",
    "discord-general",
    DiscordChannel,
    DiscordConfig,
    "https://discord.com/api/webhooks/112233445566/Tok3n_SECRET-value",
    ("discord.com", "discordapp.com"),
    Reply(204),
)
SLACK = Chat(
    "slack",
    "slack-ops",
    SlackChannel,
    SlackConfig,
    "https://hooks.slack.com/services/T0001AAAA/B0002BBBB/SeCrEtToKeN123456789abc",
    ("hooks.slack.com",),
    Reply(200, "ok"),  # a Slack webhook answers 200 with the body "ok"
)
BOTH = [pytest.param(DISCORD, id="discord"), pytest.param(SLACK, id="slack")]


@pytest.fixture
async def sink(chat: Chat) -> AsyncIterator[HttpSink]:
    async with HttpSink(chat.ok) as server:
        with intercept.redirect(dict.fromkeys(chat.hosts, server.url)):
            yield server


async def send(chat: Chat, message: Message, **options: Any) -> Outcome:
    # A new channel per send: apprise spaces sends of one Slack channel 1.2s apart.
    channel = chat.channel(chat.name, chat.config(type=chat.type, url=chat.url, **options))
    try:
        return await channel.send(message)
    finally:
        await channel.aclose()


@pytest.mark.parametrize(
    ("chat", "replies", "status", "reason", "retry_after"),
    [
        pytest.param(DISCORD, [Reply(200)], "sent", "", None, id="discord-200"),
        pytest.param(DISCORD, [Reply(204)], "sent", "", None, id="discord-204"),
        pytest.param(
            DISCORD,
            [Reply(400, {"message": "Invalid Form Body"})],
            "failed",
            "HTTP 400 Bad Request",
            None,
            id="discord-400",
        ),
        pytest.param(DISCORD, [Reply(401)], "failed", "HTTP 401 Unauthorized", None, id="discord-401"),
        pytest.param(DISCORD, [Reply(403)], "failed", "HTTP 403 Forbidden", None, id="discord-403"),
        pytest.param(
            DISCORD,
            [Reply(404, {"message": "Unknown Webhook"})],
            "failed",
            "HTTP 404 Not Found",
            None,
            id="discord-404",
        ),
        # Apprise retries a Discord 429 once by itself; both answers are rate limits here.
        pytest.param(DISCORD, [Reply(429), Reply(429)], "retry", "HTTP 429 Too Many Requests", None, id="discord-429"),
        pytest.param(
            DISCORD,
            [Reply(429, headers={"Retry-After": "3"})] * 2,
            "retry",
            "HTTP 429 Too Many Requests",
            3.0,
            id="discord-429-retry-after-header",
        ),
        pytest.param(
            DISCORD,
            [Reply(429, {"message": "You are being rate limited.", "retry_after": 1.75})] * 2,
            "retry",
            None,
            1.75,
            id="discord-429-retry-after-body",
        ),
        pytest.param(DISCORD, [Reply(500)], "retry", "HTTP 500 Internal Server Error", None, id="discord-500"),
        pytest.param(DISCORD, [Reply(502)], "retry", "HTTP 502 Bad Gateway", None, id="discord-502"),
        pytest.param(DISCORD, [Reply(503)], "retry", "HTTP 503 Service Unavailable", None, id="discord-503"),
        pytest.param(SLACK, [Reply(200, "ok")], "sent", "", None, id="slack-200"),
        pytest.param(SLACK, [Reply(400, "invalid_payload")], "failed", "HTTP 400 Bad Request", None, id="slack-400"),
        pytest.param(SLACK, [Reply(403, "invalid_token")], "failed", "HTTP 403 Forbidden", None, id="slack-403"),
        pytest.param(SLACK, [Reply(404, "no_service")], "failed", "HTTP 404 Not Found", None, id="slack-404"),
        pytest.param(
            SLACK,
            [Reply(429, headers={"Retry-After": "30"})],
            "retry",
            "HTTP 429 Too Many Requests",
            30.0,
            id="slack-429-retry-after-header",
        ),
        pytest.param(SLACK, [Reply(500)], "retry", "HTTP 500 Internal Server Error", None, id="slack-500"),
        # Slack's webhook says "ok" in the body; a 200 saying anything else is a failure.
        pytest.param(SLACK, [Reply(200, "not ok")], "failed", None, None, id="slack-200-not-ok"),
    ],
)
async def test_classification_through_apprise(
    chat: Chat, sink: HttpSink, replies: list[Reply], status: str, reason: str | None, retry_after: float | None
) -> None:
    sink.reply(*replies)
    outcome = await send(chat, Message("t", "b"))
    assert outcome.status == status
    if reason is not None:
        assert outcome.reason == reason
    assert outcome.retry_after == retry_after


@pytest.mark.parametrize("chat", BOTH)
async def test_timeout_through_apprise(chat: Chat, sink: HttpSink) -> None:
    sink.reply(Reply(hang=True))
    outcome = await send(chat, Message("t", "b"), timeout="500ms")
    assert outcome == Outcome.retryable("timeout after 500ms")


@pytest.mark.parametrize("chat", BOTH)
async def test_refused_connection_through_apprise(chat: Chat) -> None:
    with intercept.redirect(dict.fromkeys(chat.hosts, f"http://127.0.0.1:{free_port()}")):
        outcome = await send(chat, Message("t", "b"))
    assert outcome == Outcome.retryable("connection refused")


@pytest.mark.parametrize(
    ("chat", "url", "message", "secrets"),
    [
        pytest.param(
            DISCORD,
            "https://hooks.slack.com/services/T000/B000/XXXX",
            "use `type: slack`",
            ("XXXX", "pass"),
            id="discord-given-slack",
        ),
        pytest.param(
            DISCORD, "mailto://user:pass@example.com", "use `type: email`", ("XXXX", "pass"), id="discord-given-mailto"
        ),
        pytest.param(
            DISCORD,
            "https://discord.com/api/webhooks/notanumber/x",
            "expected a Discord webhook URL",
            ("XXXX", "pass"),
            id="discord-bad-id",
        ),
        pytest.param(
            DISCORD,
            "https://example.com/api/webhooks/1/x",
            "expected a Discord webhook URL",
            ("XXXX", "pass"),
            id="discord-other-host",
        ),
        pytest.param(
            SLACK,
            "https://discord.com/api/webhooks/1/abcdef",
            "use `type: discord`",
            ("abcdef",),
            id="slack-given-discord",
        ),
        pytest.param(
            SLACK,
            "https://hooks.slack.com/workflows/T1/A2/B3/C4",
            "expected a Slack incoming-webhook URL",
            ("abcdef",),
            id="slack-workflow-url",
        ),
        pytest.param(
            SLACK, "slack://onlyone", "expected a Slack incoming-webhook URL", ("abcdef",), id="slack-one-token"
        ),
    ],
)
def test_wrong_urls_are_config_errors(chat: Chat, url: str, message: str, secrets: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError) as info:
        chat.config(type=chat.type, url=url)
    assert message in str(info.value)
    for secret in secrets:
        assert secret not in str(info.value)
