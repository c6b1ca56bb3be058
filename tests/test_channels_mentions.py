"""Event data never pings: every Discord and Slack post, checked on the wire (apprise's real request).

Each message kind the router posts (plain content, embeds, a template's native block, and the
plain messages that folded summaries, digests and failure notifications are) goes through the
one wrapped ``_send`` of the channel; these tests read what reached a local HTTP server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import ValidationError

from router.channels.discord import DiscordChannel, DiscordConfig
from router.channels.slack import SlackChannel, SlackConfig
from router.core.message import Message
from tests.fakes import intercept
from tests.fakes.http_sink import HttpSink, Reply

DISCORD = "https://discord.com/api/webhooks/112233445566/Tok3n_SECRET-value"
SLACK = "https://hooks.slack.com/services/T0001AAAA/B0002BBBB/SeCrEtToKeN123456789abc"

HOSTILE = "@everyone @here <@&987654321> <@123456> <!channel> <!here> <!everyone> <@U0123ABC> <!subteam^S1|devs> ada@example.com"
NOBODY = {"parse": []}


@pytest.fixture
async def sink() -> AsyncIterator[HttpSink]:
    async with HttpSink(Reply(200, "ok")) as server:
        with intercept.redirect({"discord.com": server.url, "hooks.slack.com": server.url}):
            yield server


async def post(sink: HttpSink, channel: DiscordChannel | SlackChannel, message: Message) -> dict[str, Any]:
    try:
        outcome = await channel.send(message)
    finally:
        await channel.aclose()
    assert outcome.ok, outcome
    body: dict[str, Any] = sink.requests[-1].json()
    return body


def discord(**options: Any) -> DiscordChannel:
    return DiscordChannel("discord-general", DiscordConfig(type="discord", url=DISCORD, **options))


def slack(**options: Any) -> SlackChannel:
    return SlackChannel("slack-ops", SlackConfig(type="slack", url=SLACK, **options))


def strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else []


async def test_discord_embed_pings_nobody_and_adds_no_mention_line(sink: HttpSink) -> None:
    body = await post(sink, discord(), Message(f"Welcome {HOSTILE}", HOSTILE))
    assert body["allowed_mentions"] == NOBODY
    assert "allow_mentions" not in body
    assert "content" not in body  # no "👉 @everyone ..." line, no "@example" junk from the address
    assert body["embeds"][0]["description"] == HOSTILE


async def test_discord_plain_content_pings_nobody(sink: HttpSink) -> None:
    body = await post(sink, discord(embeds=False), Message("Welcome", HOSTILE))
    assert body["content"] == f"Welcome\r\n{HOSTILE}"  # the text itself is untouched
    assert body["allowed_mentions"] == NOBODY


async def test_discord_native_payload_cannot_widen_mentions(sink: HttpSink) -> None:
    payload = {"content": HOSTILE, "allowed_mentions": {"parse": ["everyone", "users", "roles"]}}
    body = await post(sink, discord(), Message("t", "b", payload=payload))
    assert body["content"] == HOSTILE
    assert body["allowed_mentions"] == NOBODY


async def test_discord_opt_in_allows_exactly_the_listed_ids(sink: HttpSink) -> None:
    mentions = {"users": ["123456"], "roles": ["987654321"], "everyone": False}
    body = await post(sink, discord(embeds=False, mentions=mentions), Message("t", HOSTILE))
    assert body["allowed_mentions"] == {"parse": [], "users": ["123456"], "roles": ["987654321"]}
    body = await post(sink, discord(embeds=False, mentions={"everyone": True}), Message("t", HOSTILE))
    assert body["allowed_mentions"] == {"parse": ["everyone"]}


def test_discord_mention_options_are_checked() -> None:
    with pytest.raises(ValidationError, match="not a Discord ID"):
        DiscordConfig(type="discord", url=DISCORD, mentions={"users": ["@everyone"]})
    with pytest.raises(ValidationError, match="ping= is not supported"):
        DiscordConfig(type="discord", url="discord://1/abc?ping=@everyone")


@pytest.mark.parametrize("blocks", [True, False])
async def test_slack_mention_markup_from_text_is_escaped(sink: HttpSink, blocks: bool) -> None:
    body = await post(sink, slack(blocks=blocks), Message(f"Welcome {HOSTILE}", HOSTILE))
    texts = strings(body)
    for markup in ("<!channel>", "<!here>", "<!everyone>", "<@U0123ABC>", "<!subteam^S1|devs>", "<@123456>"):
        assert not any(markup in text for text in texts), (markup, body)
    assert any("&lt;!channel&gt;" in text for text in texts)


async def test_slack_native_payload_is_neutralised_too(sink: HttpSink) -> None:
    payload = {
        "text": "<!here> deploy",
        "link_names": True,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": f"by {HOSTILE}"}}],
    }
    body = await post(sink, slack(), Message("t", "b", payload=payload))
    assert body["text"] == "&lt;!here&gt; deploy"
    assert "link_names" not in body
    assert "<!channel>" not in body["blocks"][0]["text"]["text"]


async def test_slack_opt_in_keeps_exactly_the_listed_mentions(sink: HttpSink) -> None:
    payload = {"text": "<@U0123ABC> <@U9999999> <!subteam^S1|devs> <!here>"}
    body = await post(
        sink, slack(mentions={"users": ["U0123ABC"], "roles": ["S1"]}), Message("t", "b", payload=payload)
    )
    assert body["text"] == "<@U0123ABC> &lt;@U9999999&gt; <!subteam^S1|devs> &lt;!here&gt;"
    body = await post(sink, slack(mentions={"everyone": True}), Message("t", "b", payload=payload))
    assert body["text"] == "&lt;@U0123ABC&gt; &lt;@U9999999&gt; &lt;!subteam^S1|devs&gt; <!here>"


@pytest.mark.parametrize("url", ["discord://1/abc", "slack://T1/B1/XYZ"])
def test_the_generic_apprise_type_refuses_discord_and_slack_urls(url: str) -> None:
    # Through `type: apprise` nothing would stop apprise's own mention detection.
    from router.channels.apprise.url import AppriseConfig

    with pytest.raises(ValidationError, match=r"use `type: (discord|slack)`"):
        AppriseConfig(type="apprise", url=url)
