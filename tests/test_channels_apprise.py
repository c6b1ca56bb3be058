"""The generic apprise channel: any apprise URL, tags selecting which URLs are notified."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import ValidationError

from router.channels.apprise.url import AppriseChannel, AppriseConfig
from router.core.message import Message
from tests.fakes.http_sink import HttpSink, Reply


@pytest.fixture
async def sink() -> AsyncIterator[HttpSink]:
    async with HttpSink(Reply(200)) as server:
        yield server


def json_url(sink: HttpSink, path: str) -> str:
    # apprise's json:// posts {"title", "message", ...} to http://host:port/path
    return f"json://127.0.0.1:{sink.port}/{path}"


async def test_any_apprise_url(sink: HttpSink) -> None:
    channel = AppriseChannel("anything", AppriseConfig(type="apprise", url=json_url(sink, "hook")))
    try:
        assert (await channel.send(Message("Hello", "from the router"))).ok
    finally:
        await channel.aclose()
    [request] = sink.requests
    assert request.path == "/hook"
    payload = request.json()
    assert (payload["title"], payload["message"]) == ("Hello", "from the router")


async def test_tags_select_urls(sink: HttpSink) -> None:
    config = AppriseConfig(
        type="apprise",
        url=[
            {"url": json_url(sink, "ops"), "tags": ["ops"]},
            {"url": json_url(sink, "dev"), "tags": ["dev"]},
        ],
        tags=["ops"],
    )
    channel = AppriseChannel("tagged", config)
    try:
        assert (await channel.send(Message("t", "b"))).ok
    finally:
        await channel.aclose()
    assert [r.path for r in sink.requests] == ["/ops"]


async def test_failure_is_classified(sink: HttpSink) -> None:
    sink.reply(Reply(503, headers={"Retry-After": "12"}))
    channel = AppriseChannel("anything", AppriseConfig(type="apprise", url=json_url(sink, "x")))
    try:
        outcome = await channel.send(Message("t", "b"))
    finally:
        await channel.aclose()
    assert (outcome.status, outcome.reason, outcome.retry_after) == ("retry", "HTTP 503 Service Unavailable", 12.0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"url": "ntfyy://topic"}, "did you mean 'ntfy'"),
        ({"url": "not a url"}, "expected an apprise URL"),
        ({"url": []}, "at least one apprise URL"),
        ({"url": "ntfy://topic", "tags": ["ops"]}, "carries any of the tags"),
        ({"url": [{"url": "ntfy://topic", "tag": ["x"]}]}, "tag"),
    ],
)
def test_config_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        AppriseConfig(type="apprise", **options)
    assert message in str(info.value)


def test_secrets_stay_out_of_errors_and_describe() -> None:
    # A Telegram bot token is private in apprise's own description of the URL.
    url = "tgram://123456789:AAbbCCddEEffGGhhIIjjKKllMMnnOOpp/12345"
    channel = AppriseChannel("tg", AppriseConfig(type="apprise", url=url))
    assert "AAbbCC" not in channel.describe()
    assert channel.describe() == "tg (apprise: tgram://***)"
