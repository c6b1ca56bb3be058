"""The Discord channel, checked on the wire: apprise's real request, rerouted to a local server.

What Discord and Slack share (failure classification, timeouts, refused connections, wrong
URLs) is tested for both in test_channels_chat.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import apprise
import pytest
from pydantic import ValidationError

from router.channels.discord import DiscordChannel, DiscordConfig
from router.core.message import Message, Outcome
from tests.fakes import intercept
from tests.fakes.http_sink import HttpSink, Reply

URL = "https://discord.com/api/webhooks/112233445566/Tok3n_SECRET-value"


@pytest.fixture
async def sink() -> AsyncIterator[HttpSink]:
    async with HttpSink(Reply(204)) as server:
        with intercept.redirect({"discord.com": server.url, "discordapp.com": server.url}):
            yield server


async def send(message: Message, url: str = URL, **options: Any) -> Outcome:
    channel = DiscordChannel("discord-general", DiscordConfig(type="discord", url=url, **options))
    try:
        return await channel.send(message)
    finally:
        await channel.aclose()


async def test_embed_on_the_wire(sink: HttpSink) -> None:
    outcome = await send(
        Message("Planet completed", "Alice finished **Mars**"),
        username="Router Bot",
        color="#5865F2",
        avatar_url="https://example.com/bot.png",
    )
    assert outcome.ok
    [request] = sink.requests
    assert request.original_host == "discord.com"
    assert request.path == "/api/webhooks/112233445566/Tok3n_SECRET-value"
    payload = request.json()
    assert payload["username"] == "Router Bot"
    assert payload["avatar_url"] == "https://example.com/bot.png"
    assert "content" not in payload
    [embed] = payload["embeds"]
    assert embed["title"] == "Planet completed"
    assert embed["description"] == "Alice finished **Mars**"
    assert embed["color"] == 0x5865F2
    assert "fields" not in embed


async def test_plain_content_on_the_wire(sink: HttpSink) -> None:
    assert (await send(Message("Heads up", "line one\nline two"), embeds=False)).ok
    payload = sink.requests[0].json()
    assert payload["content"] == "Heads up\r\nline one\nline two"
    assert "embeds" not in payload
    assert "username" not in payload  # the webhook's own name is kept
    assert "avatar_url" not in payload  # and its own avatar, not apprise's logo


async def test_markdown_headings_become_fields_when_asked(sink: HttpSink) -> None:
    assert (await send(Message("Report", "intro\n# Score\n42\n# Rank\n3"), fields=True)).ok
    [embed] = sink.requests[0].json()["embeds"]
    assert embed["description"] == "intro"
    assert [f["name"] for f in embed["fields"]] == ["Score", "Rank"]


async def test_legacy_discordapp_and_native_urls(sink: HttpSink) -> None:
    url = "https://discordapp.com/api/webhooks/1/abc?thread_id=99"
    assert (await send(Message("t", "b"), url=url, embeds=False)).ok
    assert (await send(Message("t", "b"), url="discord://Named@2/def")).ok
    first, second = sink.requests
    assert (first.original_host, first.path, first.query.get("thread_id")) == (
        "discord.com",
        "/api/webhooks/1/abc",
        "99",
    )
    assert second.path == "/api/webhooks/2/def"
    assert second.json()["username"] == "Named"


async def test_long_messages_respect_discord_limits(sink: HttpSink) -> None:
    title, body = "T" * 300, "word " * 2000  # 10,000 characters
    assert (await send(Message(title, body))).ok
    assert (await send(Message(title, body), embeds=False)).ok
    embed_request, content_request = sink.requests
    [embed] = embed_request.json()["embeds"]
    assert len(embed["title"]) <= 256 and embed["title"].endswith("…")
    assert len(embed["description"]) <= 4096 and embed["description"].endswith("…")
    assert len(embed["description"]) > 4000  # cut at the limit, not far before it
    content = content_request.json()["content"]
    assert 1900 < len(content) <= 2000 and content.endswith("…")


async def test_a_429_then_success_is_sent(sink: HttpSink) -> None:
    sink.reply(Reply(429), Reply(204))
    assert (await send(Message("t", "b"))).ok
    assert len(sink.requests) == 2


async def test_apprise_object_built_once_per_channel(sink: HttpSink, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[object] = []

    class CountingApprise(apprise.Apprise):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            built.append(self)
            super().__init__(*args, **kwargs)

    # The channel module calls apprise.Apprise(...) through the module attribute.
    monkeypatch.setattr(apprise, "Apprise", CountingApprise)
    channel = DiscordChannel("d", DiscordConfig(type="discord", url=URL))
    try:
        for i in range(6):
            assert (await channel.send(Message("t", f"message {i}"))).ok
    finally:
        await channel.aclose()
    assert len(built) == 1
    assert len(sink.requests) == 6


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"color": "blue"}, "hex colour"),
        ({"color": 0x1000000}, "between 0 and"),
        ({"avatar_url": "file:///etc/passwd"}, "http(s) URL"),
        ({"embed": True}, "embed"),
    ],
)
def test_option_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        DiscordConfig(type="discord", url=URL, **options)
    assert message in str(info.value)


def test_color_accepts_numbers() -> None:
    assert DiscordConfig(type="discord", url=URL, color=0x00FF00).color == "#00FF00"


def test_describe_hides_the_token() -> None:
    channel = DiscordChannel("d", DiscordConfig(type="discord", url=URL))
    assert "Tok3n" not in channel.describe()
    assert channel.describe() == "d (discord webhook 112233445566, embeds)"


async def test_plain_embed_carries_no_third_party_author_by_default(sink: HttpSink) -> None:
    assert (await send(Message("Planet completed", "Alice finished Mars"))).ok
    assert (await send(Message("Planet completed", "Alice finished Mars"), username="Mission Control")).ok
    for request in sink.requests:
        [embed] = request.json()["embeds"]
        assert "author" not in embed, embed
        assert "apprise" not in request.body.decode()


async def test_embed_author_is_set_per_channel(sink: HttpSink) -> None:
    author = {"name": "Ops", "url": "https://ops.example.com", "icon_url": "https://example.com/ops.png"}
    assert (await send(Message("Heads up", "body"), author=author, avatar_url="https://example.com/bot.png")).ok
    payload = sink.requests[0].json()
    assert payload["embeds"][0]["author"] == author
    assert payload["avatar_url"] == "https://example.com/bot.png"
    assert (await send(Message("Heads up", "body"), author={"name": "Ops"})).ok
    assert sink.requests[1].json()["embeds"][0]["author"] == {"name": "Ops"}


def test_author_urls_must_be_http() -> None:
    with pytest.raises(ValidationError, match="must be an http"):
        DiscordConfig(type="discord", url=URL, author={"name": "x", "icon_url": "file:///etc/passwd"})


async def test_preview_shows_no_third_party_author() -> None:
    channel = DiscordChannel("discord-general", DiscordConfig(type="discord", url=URL))
    try:
        [body] = channel.preview(Message("t", "b")) or []
    finally:
        await channel.aclose()
    assert "author" not in body["embeds"][0]
