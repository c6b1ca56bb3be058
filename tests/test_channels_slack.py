"""The Slack channel, checked on the wire: apprise's real request, rerouted to a local server.

What Discord and Slack share (failure classification, timeouts, refused connections, wrong
URLs) is tested for both in test_channels_chat.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import ValidationError

from router.channels.slack import SlackChannel, SlackConfig
from router.core.message import Message, Outcome
from tests.fakes import intercept
from tests.fakes.http_sink import HttpSink, Reply

URL = "https://hooks.slack.com/services/T0001AAAA/B0002BBBB/SeCrEtToKeN123456789abc"


@pytest.fixture
async def sink() -> AsyncIterator[HttpSink]:
    # A Slack webhook answers 200 with the body "ok".
    async with HttpSink(Reply(200, "ok")) as server:
        with intercept.redirect({"hooks.slack.com": server.url}):
            yield server


async def send(message: Message, url: str = URL, **options: Any) -> Outcome:
    # A new channel per send: apprise spaces sends of one Slack channel 1.2s apart.
    channel = SlackChannel("slack-ops", SlackConfig(type="slack", url=url, **options))
    try:
        return await channel.send(message)
    finally:
        await channel.aclose()


async def test_block_kit_on_the_wire(sink: HttpSink) -> None:
    outcome = await send(Message("Deploy done", "*api* is live"), username="Router", channel="#ops")
    assert outcome.ok
    [request] = sink.requests
    assert request.original_host == "hooks.slack.com"
    assert request.path == "/services/T0001AAAA/B0002BBBB/SeCrEtToKeN123456789abc"
    payload = request.json()
    assert payload["username"] == "Router"
    assert payload["channel"] == "#ops"
    [attachment] = payload["attachments"]
    header, section = attachment["blocks"]  # no footer block, no timestamp
    assert header == {"type": "header", "text": {"type": "plain_text", "text": "Deploy done", "emoji": True}}
    assert section == {"type": "section", "text": {"type": "mrkdwn", "text": "*api* is live"}}


async def test_classic_attachment_on_the_wire(sink: HttpSink) -> None:
    assert (await send(Message("Deploy done", "*api* & <https://x.example|docs>"), blocks=False)).ok
    payload = sink.requests[0].json()
    [attachment] = payload["attachments"]
    assert "blocks" not in attachment
    assert attachment["title"] == "Deploy done"
    # Slack needs & escaped; its own <url|label> links stay links.
    assert attachment["text"] == "*api* &amp; <https://x.example|docs>"
    assert payload["mrkdwn"] is True
    assert "footer" not in attachment


async def test_icon(sink: HttpSink) -> None:
    assert (await send(Message("t", "b"), icon="https://example.com/icon.png", blocks=False)).ok
    assert sink.requests[0].json()["icon_url"] == "https://example.com/icon.png"


async def test_block_limits(sink: HttpSink) -> None:
    assert (await send(Message("& " * 100, "x" * 5000))).ok
    header, section = sink.requests[0].json()["attachments"][0]["blocks"]
    assert len(header["text"]["text"]) <= 150  # counted after escaping & to &amp;
    assert header["text"]["text"].endswith("…")
    assert len(section["text"]["text"]) == 3000
    assert section["text"]["text"].endswith("…")


async def test_message_limit_without_blocks(sink: HttpSink) -> None:
    assert (await send(Message("Title", "a & b " * 10_000), blocks=False)).ok
    attachment = sink.requests[0].json()["attachments"][0]
    total = len(attachment["title"]) + len(attachment["text"])
    assert 39_000 < total <= 40_000
    assert attachment["text"].endswith("…")


async def test_native_url_with_channel(sink: HttpSink) -> None:
    assert (await send(Message("t", "b"), url="slack://Bot@T0001AAAA/B0002BBBB/SeCrEtToKeN/#alerts")).ok
    payload = sink.requests[0].json()
    assert (payload["username"], payload["channel"]) == ("Bot", "#alerts")


def test_option_errors() -> None:
    with pytest.raises(ValidationError, match="icon must be an http"):
        SlackConfig(type="slack", url=URL, icon=":rocket:")
    with pytest.raises(ValidationError, match="channel must look like"):
        SlackConfig(type="slack", url=URL, channel="#no spaces")
