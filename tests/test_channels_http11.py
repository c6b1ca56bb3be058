"""The webhook channel's small HTTP/1.1 client for plain http:// URLs (router/channels/http11.py).

A raw TCP server answers scripted bytes, so replies aiohttp's server would never write
(chunked with trailers, a body until the connection closes, oversized heads) are covered.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from router.channels import http11
from router.channels.webhook import WebhookChannel, WebhookConfig
from router.core.message import Message, Outcome
from tests.fakes.http_sink import HttpSink, Reply

Answer = Callable[[int], bytes | None]  # request number -> reply bytes; None: close the connection


class RawServer:
    """Reads each request (head and Content-Length body) and writes what ``answer`` returns."""

    def __init__(self, answer: Answer, *, close_after_reply: bool = False) -> None:
        self.answer = answer
        self.close_after_reply = close_after_reply
        self.requests: list[bytes] = []
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                self.requests.append(head + await reader.readexactly(length))
                reply = self.answer(len(self.requests))
                if reply is None:
                    break
                writer.write(reply)
                await writer.drain()
                if self.close_after_reply:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/hook"

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()


def webhook(url: str, **options: Any) -> WebhookChannel:
    return WebhookChannel("hook", WebhookConfig(type="webhook", url=url, **options))


@pytest.fixture
async def sink() -> AsyncIterator[HttpSink]:
    async with HttpSink(Reply(200, {"ok": True})) as server:
        yield server


async def test_requests_share_one_kept_alive_connection(sink: HttpSink) -> None:
    channel = webhook(sink.url, headers={"X-Api-Key": "k"})
    try:
        outcomes = [await channel.send(Message("t", str(i), {"idempotency_key": f"key-{i}"})) for i in range(5)]
    finally:
        await channel.aclose()
    assert all(o.ok for o in outcomes)
    assert len(sink.requests) == 5
    assert len({r.peer_port for r in sink.requests}) == 1
    first = sink.requests[0]
    assert first.headers["x-api-key"] == "k"
    assert first.headers["idempotency-key"] == "key-0"
    assert first.json()["body"] == "0"


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n3;ext=1\r\n!!!\r\n0\r\nX-Trailer: 1\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
    ],
    ids=["content-length", "chunked-with-trailers", "interim-then-204"],
)
async def test_replies_are_read_whole_and_the_connection_kept(reply: bytes) -> None:
    async with RawServer(lambda _: reply) as server:
        channel = webhook(server.url)
        try:
            first = await channel.send(Message("t", "1"))
            second = await channel.send(Message("t", "2"))
        finally:
            await channel.aclose()
    assert first.ok and second.ok
    assert server.connections == 1


async def test_a_body_until_close_and_http_1_0_close_the_connection() -> None:
    replies = [b"HTTP/1.1 200 OK\r\n\r\nuntil close", b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"]
    async with RawServer(lambda n: replies[(n - 1) % 2], close_after_reply=True) as server:
        channel = webhook(server.url, timeout="5s")
        try:
            outcomes = [await channel.send(Message("t", str(i))) for i in range(2)]
        finally:
            await channel.aclose()
    assert all(o.ok for o in outcomes)
    assert server.connections == 2


async def test_a_stale_kept_alive_connection_is_replaced() -> None:
    # The server answers, then closes the connection after the first request (as an idle
    # timeout would): the next request goes out once more on a new connection.
    answers = {1: b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"}

    def answer(n: int) -> bytes | None:
        return answers.get(n, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" if n > 2 else None)

    async with RawServer(answer) as server:
        channel = webhook(server.url)
        try:
            assert (await channel.send(Message("t", "1"))).ok
            outcome = await channel.send(Message("t", "2"))
        finally:
            await channel.aclose()
    assert outcome.ok
    assert server.connections == 2


async def test_redirects_are_not_followed() -> None:
    reply = b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/elsewhere\r\nContent-Length: 0\r\n\r\n"
    async with RawServer(lambda _: reply) as server:
        channel = webhook(server.url)
        try:
            outcome = await channel.send(Message("t", "b"))
        finally:
            await channel.aclose()
    assert outcome == Outcome.permanent("HTTP 302 Found")
    assert len(server.requests) == 1


async def test_retry_after_is_read_from_the_reply() -> None:
    reply = b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n"
    async with RawServer(lambda _: reply) as server:
        channel = webhook(server.url)
        try:
            outcome = await channel.send(Message("t", "b"))
        finally:
            await channel.aclose()
    assert outcome == Outcome.retryable("HTTP 429 Too Many Requests", 7.0)


async def test_hostile_replies_cost_a_bounded_amount() -> None:
    huge_head = b"HTTP/1.1 200 OK\r\nX-Junk: " + b"a" * (http11.MAX_HEAD + 10)
    huge_body = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (http11.MAX_DRAIN + 1) + b"x" * 1000
    garbage = b"SMTP ready\r\n\r\n"
    for reply, expected in (
        (huge_head, Outcome.retryable("connection error (ProtocolError)")),
        (garbage, Outcome.retryable("connection error (ProtocolError)")),
        # The status of a reply too long to read counts; the connection is closed, not drained.
        (huge_body, Outcome.sent("HTTP 200 OK")),
    ):
        async with RawServer(lambda _, r=reply: r) as server:  # type: ignore[misc]
            channel = webhook(server.url, timeout="5s")
            try:
                outcome = await channel.send(Message("t", "b"))
            finally:
                await channel.aclose()
        assert outcome == expected


def test_under_uvloop() -> None:
    """`router serve` runs on uvloop, whose transports are not asyncio.Transport subclasses."""
    uvloop = pytest.importorskip("uvloop")

    async def main() -> list[Outcome]:
        async with HttpSink(Reply(200)) as server:
            channel = webhook(server.url)
            try:
                return [await channel.send(Message("t", str(i))) for i in range(3)]
            finally:
                await channel.aclose()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert all(o.ok for o in runner.run(main()))
