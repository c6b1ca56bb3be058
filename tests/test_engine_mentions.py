"""Mentions for the message kinds the router makes itself: folded summary, digest, failure notification.

Each goes through the engine (embedded queue, SQLite state, real apprise) or, for the fold
summary, through the function that builds it, and is read on the wire at a local server.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from router.channels.discord import DiscordChannel, DiscordConfig
from router.channels.slack import SlackChannel, SlackConfig
from router.pipeline.fold import FoldItem, summary
from tests.builders import event_bytes
from tests.engine_support import Harness, start_harness, until
from tests.fakes import intercept
from tests.fakes.http_sink import HttpSink, Reply

HOSTILE = "@everyone <@&987654321> <!channel> <@U0123ABC> ada@example.com"
NOBODY = {"parse": []}

TEMPLATES = {
    "hello.j2": "{% block title %}Hi {{ data.name }}{% endblock %}{% block body %}{{ data.name }} did it{% endblock %}",
    "many.j2": "{% block title %}{{ count }} sign-ups{% endblock %}"
    "{% block body %}{% for e in events %}{{ e.data.name }}\n{% endfor %}{% endblock %}",
    "failed.j2": "{% block title %}FAILED for {{ data.name }}{% endblock %}"
    "{% block body %}{{ failure.reason }} {{ data.name }}{% endblock %}",
}


@pytest.fixture
async def chat() -> AsyncIterator[tuple[HttpSink, HttpSink, HttpSink]]:
    async with HttpSink(Reply(204)) as discord, HttpSink(Reply(200, "ok")) as slack, HttpSink(Reply(400)) as broken:
        with intercept.redirect({"discord.com": discord.url, "hooks.slack.com": slack.url}):
            yield discord, slack, broken


def config(broken: HttpSink, rules: str) -> str:
    return f"""
version: 1
defaults:
  retry: {{attempts: 2, backoff: 50ms, max_backoff: 100ms, jitter: 0}}
  on_failure: {{template: failed, channels: [d, s]}}
channels:
  d: {{type: discord, url: "https://discord.com/api/webhooks/1/tok", embeds: false, rate_limit: false}}
  s: {{type: slack, url: "https://hooks.slack.com/services/T1/B1/XYZ", rate_limit: false, min_interval: 0s}}
  broken: {{type: webhook, url: "{broken.url}/hook"}}
rules:
{rules}
"""


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[list[Harness]]:
    started: list[Harness] = []
    yield started
    for h in started:
        await h.close()


def event(name: str, event_id: str) -> bytes:
    return event_bytes("user.signed_up", event_id, {"name": name})


def texts(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in texts(v)]
    if isinstance(value, list):
        return [s for v in value for s in texts(v)]
    return [value] if isinstance(value, str) else []


def assert_pings_nobody(discord_body: dict[str, Any], slack_body: dict[str, Any]) -> None:
    assert discord_body["allowed_mentions"] == NOBODY
    assert "allow_mentions" not in discord_body and "👉" not in json.dumps(discord_body, ensure_ascii=False)
    slack_text = " ".join(texts(slack_body))
    assert "<!channel>" not in slack_text and "<@U0123ABC>" not in slack_text
    assert "&lt;!channel&gt;" in slack_text


async def test_a_digest_pings_nobody(tmp_path: Path, chat: tuple[HttpSink, ...], harness: list[Harness]) -> None:
    discord, slack, broken = chat
    rules = "  - {name: sum, on: '**', template: many, channels: [d, s], digest: {window: 200ms, max_events: 2}}"
    h = await start_harness(tmp_path, config(broken, rules), TEMPLATES)
    harness.append(h)
    await h.publish(event(HOSTILE, "e1"))
    await h.publish(event("Bob", "e2"))
    await until(lambda: len(discord.requests) == 1 and len(slack.requests) == 1)
    body = discord.requests[0].json()
    assert HOSTILE in body["content"]
    assert_pings_nobody(body, slack.requests[0].json())


async def test_a_failure_notification_pings_nobody(
    tmp_path: Path, chat: tuple[HttpSink, ...], harness: list[Harness]
) -> None:
    discord, slack, broken = chat
    rules = "  - {name: hello, on: '**', template: hello, channels: [broken]}"
    h = await start_harness(tmp_path, config(broken, rules), TEMPLATES)
    harness.append(h)
    await h.publish(event(HOSTILE, "e1"))
    await until(lambda: len(discord.requests) == 1 and len(slack.requests) == 1)
    body = discord.requests[0].json()
    assert body["content"].startswith(f"FAILED for {HOSTILE}")
    assert_pings_nobody(body, slack.requests[0].json())


async def test_a_folded_summary_pings_nobody(chat: tuple[HttpSink, ...]) -> None:
    discord, slack, _ = chat
    items = [
        FoldItem(key=f"k{n}", rule="hello", title=f"Hi {HOSTILE} {n}", events=(f"e{n}",), body="b", meta={})
        for n in range(3)
    ]
    _, message = summary("d", "fold-1", items)
    assert HOSTILE in message.body
    channels = [
        DiscordChannel("d", DiscordConfig(type="discord", url="https://discord.com/api/webhooks/1/tok")),
        SlackChannel("s", SlackConfig(type="slack", url="https://hooks.slack.com/services/T1/B1/XYZ")),
    ]
    for channel in channels:
        try:
            assert (await channel.send(message)).ok
        finally:
            await channel.aclose()
    assert_pings_nobody(discord.requests[0].json(), slack.requests[0].json())
