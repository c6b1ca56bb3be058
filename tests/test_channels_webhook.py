"""The webhook channel: JSON on the wire, one pool of kept-alive connections, failures classified."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from pydantic import ValidationError

from router.channels.webhook import WebhookChannel, WebhookConfig
from router.core.message import Message, Outcome
from tests.fakes.http_sink import HttpSink, Reply, free_port


@pytest.fixture
async def sink() -> AsyncIterator[HttpSink]:
    async with HttpSink(Reply(200, {"ok": True})) as server:
        yield server


def webhook(url: str, **options: Any) -> WebhookChannel:
    return WebhookChannel("hook", WebhookConfig(type="webhook", url=url, **options))


async def test_posts_title_body_and_meta_as_json(sink: HttpSink) -> None:
    channel = webhook(f"{sink.url}/notify?src=router", headers={"Authorization": "Bearer s3cr3t-value"})
    message = Message("Planet done", "Alice finished **Mars**", {"event_id": "e1", "at": datetime(2030, 1, 1)})
    try:
        outcome = await channel.send(message)
    finally:
        await channel.aclose()
    assert outcome.ok
    [request] = sink.requests
    assert (request.method, request.path, request.query) == ("POST", "/notify", {"src": "router"})
    assert request.headers["authorization"] == "Bearer s3cr3t-value"
    assert request.headers["content-type"] == "application/json"
    assert request.json() == {
        "title": "Planet done",
        "body": "Alice finished **Mars**",
        "meta": {"event_id": "e1", "at": "2030-01-01 00:00:00"},
    }


async def test_put_with_raw_body_payload(sink: HttpSink) -> None:
    channel = webhook(sink.url, method="PUT", payload="body", content_type="text/plain")
    try:
        assert (await channel.send(Message("ignored", "raw text"))).ok
    finally:
        await channel.aclose()
    [request] = sink.requests
    assert (request.method, request.text(), request.headers["content-type"]) == ("PUT", "raw text", "text/plain")


@pytest.mark.parametrize(
    ("reply", "status", "reason", "retry_after"),
    [
        (Reply(200), "sent", "HTTP 200 OK", None),
        (Reply(204), "sent", "HTTP 204 No Content", None),
        (Reply(400, "bad"), "failed", "HTTP 400 Bad Request", None),
        (Reply(401), "failed", "HTTP 401 Unauthorized", None),
        (Reply(403), "failed", "HTTP 403 Forbidden", None),
        (Reply(404), "failed", "HTTP 404 Not Found", None),
        (Reply(429), "retry", "HTTP 429 Too Many Requests", None),
        (Reply(429, headers={"Retry-After": "17"}), "retry", "HTTP 429 Too Many Requests", 17.0),
        (Reply(429, {"retry_after": 2.5}), "retry", "HTTP 429 Too Many Requests", 2.5),
        (Reply(500), "retry", "HTTP 500 Internal Server Error", None),
        (Reply(502), "retry", "HTTP 502 Bad Gateway", None),
        (Reply(503), "retry", "HTTP 503 Service Unavailable", None),
    ],
)
async def test_status_classification(
    sink: HttpSink, reply: Reply, status: str, reason: str, retry_after: float | None
) -> None:
    sink.reply(reply)
    channel = webhook(sink.url)
    try:
        outcome = await channel.send(Message("t", "b"))
    finally:
        await channel.aclose()
    assert outcome == Outcome(status, reason, retry_after)  # type: ignore[arg-type]


async def test_retry_after_http_date(sink: HttpSink) -> None:
    # Taken when the test runs, not at import: collection may come long before on a busy machine.
    retry_date = datetime.now(UTC) + timedelta(seconds=120)
    sink.reply(Reply(429, headers={"Retry-After": format_datetime(retry_date, usegmt=True)}))
    channel = webhook(sink.url)
    try:
        outcome = await channel.send(Message("t", "b"))
    finally:
        await channel.aclose()
    assert outcome.status == "retry"
    assert outcome.retry_after is not None and 100 < outcome.retry_after <= 120


async def test_timeout_is_retryable(sink: HttpSink) -> None:
    sink.reply(Reply(hang=True))
    channel = webhook(sink.url, timeout="300ms")
    try:
        outcome = await channel.send(Message("t", "b"))
    finally:
        await channel.aclose()
    assert outcome == Outcome.retryable("timeout after 300ms")


async def test_refused_connection_is_retryable() -> None:
    channel = webhook(f"http://127.0.0.1:{free_port()}/hook")
    try:
        outcome = await channel.send(Message("t", "b"))
    finally:
        await channel.aclose()
    assert outcome == Outcome.retryable("connection refused")


async def test_one_pool_of_kept_alive_connections_the_size_of_concurrency(sink: HttpSink) -> None:
    channel = webhook(sink.url, concurrency=2)
    try:
        outcomes = await asyncio.gather(*(channel.send(Message("t", str(i))) for i in range(20)))
        assert all(o.ok for o in outcomes)
        await channel.send(Message("t", "again"))
    finally:
        await channel.aclose()
    assert len(sink.requests) == 21
    # Twenty-one sends, twenty of them concurrent, went through at most two connections.
    assert len({r.peer_port for r in sink.requests}) <= 2


async def test_credentials_in_the_url_are_sent_as_basic_auth(sink: HttpSink) -> None:
    host = sink.url.removeprefix("http://")
    channel = webhook(f"http://robot:pa55-w0rd@{host}/hook")
    try:
        outcome = await channel.send(Message("t", "b"))
    finally:
        await channel.aclose()
    assert outcome.ok
    assert sink.requests[0].headers["authorization"] == "Basic " + base64.b64encode(b"robot:pa55-w0rd").decode()


async def test_send_after_close_is_retryable_not_an_error(sink: HttpSink) -> None:
    channel = webhook(sink.url)
    await channel.aclose()
    outcome = await channel.send(Message("t", "b"))
    assert outcome.status == "retry"
    assert sink.requests == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"url": "ftp://example.com/x"}, "http:// or https://"),
        ({"url": "https://example.com", "headers": {"Bad Header": "x"}}, "invalid header name"),
        ({"url": "https://example.com", "method": "GET"}, "method"),
        ({"url": "https://example.com", "timeout": "soon"}, "duration"),
        ({"url": "https://example.com", "retries": 3}, "retries"),
    ],
)
def test_config_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        WebhookConfig(type="webhook", **options)
    assert message in str(info.value)


def test_describe_shows_no_secret() -> None:
    channel = webhook("https://user:pa55word@hooks.example.com/abc123def456ghi789/x?token=qwerty123")
    assert channel.describe() == "hook (webhook POST https://hooks.example.com)"


@dataclass
class _Point:
    x: int


@pytest.mark.parametrize(
    "meta",
    [
        {"at": datetime(2030, 1, 1, tzinfo=UTC)},
        {"point": _Point(1)},
        {1: "a non-string key"},
        {"big": 2**70},
        {"text": 'é ☃ \u2028 "quoted"'},
    ],
    ids=["datetime", "dataclass", "int-key", "big-int", "unicode"],
)
def test_message_json_is_what_the_standard_library_writes(meta: dict[Any, Any]) -> None:
    data, content_type = webhook("http://127.0.0.1/hook")._encode(Message("t", "b", meta))
    standard = json.dumps({"title": "t", "body": "b", "meta": meta}, default=str, ensure_ascii=False)
    assert content_type == "application/json"
    assert json.loads(data) == json.loads(standard)
