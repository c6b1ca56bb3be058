"""Rich messages and template limits through the whole engine (embedded queue, SQLite state, real apprise)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tests.builders import event_bytes
from tests.engine_support import Harness, RecorderChannel, start_harness, until
from tests.fakes import intercept
from tests.fakes.http_sink import HttpSink, Reply

TEMPLATES = {
    "hello.j2": "{% block title %}Hi {{ data.name }}{% endblock %}{% block body %}{{ data.name }} did it{% endblock %}",
    "hello.discord.j2": (
        '{% extends "hello.j2" %}\n'
        "{% block discord %}\n"
        "embeds:\n"
        "  - title: {{ self.title() | yaml }}\n"
        "    fields: [{name: Who, value: {{ data.name | yaml }}}]\n"
        "{% endblock %}\n"
    ),
    "broken.j2": "{% block body %}plain{% endblock %}",
    "broken.discord.j2": '{% extends "broken.j2" %}\n\n{% block discord %}\nembeds:\n  - title: {{ data.name }}\n{% endblock %}',
    "slow.j2": (
        "{% block body %}{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}{% endblock %}"
    ),
}

CHANNELS = """
  d: {type: discord, url: "https://discord.com/api/webhooks/1/tok", rate_limit: false}
  a: {type: recorder}
"""


def config(rules: str) -> str:
    return f"""
version: 1
defaults:
  retry: {{attempts: 3, backoff: 50ms, max_backoff: 100ms, jitter: 0}}
channels:
{CHANNELS}
rules:
{rules}
"""


def event(name: str) -> bytes:
    return event_bytes("user.signed_up", "evt-1", {"name": name})


@pytest.fixture(autouse=True)
def _reset_recorder() -> None:
    RecorderChannel.reset()


@pytest.fixture
async def sink() -> AsyncIterator[HttpSink]:
    async with HttpSink(Reply(204)) as server:
        with intercept.redirect({"discord.com": server.url}):
            yield server


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Callable[[str], Awaitable[Harness]]]:
    started: list[Harness] = []

    async def make(rules: str) -> Harness:
        h = await start_harness(tmp_path, config(rules), TEMPLATES)
        started.append(h)
        return h

    yield make
    for h in started:
        await h.close()


async def test_a_retried_delivery_posts_the_same_rich_payload(harness, sink: HttpSink) -> None:
    sink.reply(Reply(503), Reply(204))
    h = await harness("  - {name: hello, on: '**', template: hello, channels: [d]}")
    await h.publish(event('Ann: "the" admin'))
    await until(lambda: len(sink.requests) == 2)
    first, second = (request.json() for request in sink.requests)
    assert first == second  # the retry sends the message carried by the retry record
    assert first["embeds"] == [
        {"title": 'Hi Ann: "the" admin', "fields": [{"name": "Who", "value": 'Ann: "the" admin'}]}
    ]
    await until(lambda: h.metrics.retries_scheduled.labels("d")._value.get() == 1)


async def test_an_invalid_rich_block_is_dead_lettered_as_a_render_failure(harness, sink: HttpSink) -> None:
    h = await harness(
        "  - {name: bad, on: '**', template: broken, channels: [d]}\n"
        "  - {name: good, on: '**', template: hello, channels: [a]}"
    )
    await h.publish(event("Ann: the admin"))
    await until(lambda: h.metrics.dead_letters.labels("render")._value.get() == 1)
    await until(lambda: [m.body for m in RecorderChannel.sent.get("a", [])] == ["Ann: the admin did it"])
    [letter] = await h.transport.dlq_list()
    assert letter.reason == "render"
    assert "broken.discord.j2, line 3: block 'discord': rendered line 2" in letter.error
    assert sink.requests == []


async def test_a_template_over_its_time_limit_is_dead_lettered(harness) -> None:
    h = await harness(
        "  - {name: slow, on: '**', template: slow, channels: [a]}\n"
        "  - {name: good, on: '**', template: hello, channels: [a]}"
    )
    await h.publish(event("Ann"))
    await until(lambda: h.metrics.dead_letters.labels("render")._value.get() == 1)
    await until(lambda: [m.body for m in RecorderChannel.sent.get("a", [])] == ["Ann did it"])
    [letter] = await h.transport.dlq_list()
    assert "slow.j2" in letter.error and "took longer than 1s" in letter.error
