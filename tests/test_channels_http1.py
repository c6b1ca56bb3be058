"""The plain-http client of the webhook channel, against real sockets that answer as servers do.

Each server here is a raw asyncio server scripted to answer one way (chunked, until close,
an interim 100, a close while idle, a malformed or oversized head), because those edges are
what a kept-alive HTTP/1.1 client gets wrong; the webhook channel's own tests cover the
ordinary answers through an aiohttp server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from router.channels.http1 import MAX_HEAD, Http1Client, ProtocolError
from router.channels.webhook import WebhookChannel, WebhookConfig
from router.core.message import Message, Outcome

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Server"], Awaitable[None]]


class Server:
    """A TCP server on 127.0.0.1 whose every connection runs ``handler``; records what it read."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.port = 0

    async def read_request(self, reader: asyncio.StreamReader) -> bytes | None:
        """One request (head and Content-Length body), or None at EOF."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        request = head + await reader.readexactly(length)
        self.requests.append(request)
        return request

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer, self)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[Server]:
    server = Server(handler)
    listener = await asyncio.start_server(server._serve, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def every_request(reply: bytes) -> Handler:
    """A server that answers each request on a connection with ``reply`` (kept alive)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        while await server.read_request(reader) is not None:
            writer.write(reply)
            await writer.drain()

    return handler


def first_request(reply: bytes, *, hold: bool = False) -> Handler:
    """A server that answers one request with ``reply``, then closes (or, ``hold``, waits for the client to)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await server.read_request(reader)
        writer.write(reply)
        await writer.drain()
        if hold:
            await reader.read()

    return handler


keep_alive = every_request(OK)


async def test_one_connection_is_kept_alive_for_many_requests() -> None:
    async with serving(keep_alive) as server:
        client = Http1Client("127.0.0.1", server.port, limit=4)
        for _ in range(5):
            response = await client.request("POST", "/hook", {"Content-Type": "text/plain"}, b"hi")
            assert (response.status, response.body) == (200, b"ok")
        await client.aclose()
    assert server.connections == 1
    assert server.requests[0] == (
        b"POST /hook HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
        % server.port
    )


async def test_concurrent_requests_use_at_most_limit_connections() -> None:
    async with serving(keep_alive) as server:
        client = Http1Client("127.0.0.1", server.port, limit=2)
        responses = await asyncio.gather(*(client.request("POST", "/", {}, b"x") for _ in range(20)))
        await client.aclose()
    assert [r.status for r in responses] == [200] * 20
    assert server.connections <= 2


async def test_chunked_reply_with_trailers_is_read_whole() -> None:
    async with serving(
        every_request(
            b"HTTP/1.1 429 Too Many Requests\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
            b'7\r\n{"retry\r\n10\r\n_after": 2.5}   \r\n0\r\nX-Trailer: yes\r\n\r\n'
        )
    ) as server:
        client = Http1Client("127.0.0.1", server.port, limit=1)
        first = await client.request("POST", "/", {}, b"x")
        second = await client.request("POST", "/", {}, b"x")
        await client.aclose()
    assert first.status == 429
    assert first.body == b'{"retry_after": 2.5}   '
    assert second.body == first.body
    assert server.connections == 1  # chunked framing kept the connection usable


async def test_reply_delimited_by_close_is_read_to_the_end() -> None:
    async with serving(
        first_request(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\n\r\nbusy, come back")
    ) as server:
        client = Http1Client("127.0.0.1", server.port, limit=1)
        response = await client.request("POST", "/", {}, b"x")
        again = await client.request("POST", "/", {}, b"x")  # the closed connection is not reused
        await client.aclose()
    assert (response.status, response.headers["retry-after"], response.body) == (503, "7", b"busy, come back")
    assert again.status == 503
    assert server.connections == 2


async def test_an_interim_100_continue_is_skipped() -> None:
    async with serving(every_request(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)) as server:
        client = Http1Client("127.0.0.1", server.port, limit=1)
        responses = [await client.request("POST", "/", {}, b"x") for _ in range(2)]
        await client.aclose()
    assert [(r.status, r.body) for r in responses] == [(200, b"ok"), (200, b"ok")]


async def test_a_request_raced_by_the_servers_idle_close_is_sent_once_more() -> None:
    async def closes_after_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await server.read_request(reader)
        writer.write(OK)  # keep-alive, as far as the client can tell
        await writer.drain()
        if server.connections == 1:
            # The idle timeout fires as the next request arrives: read, not answered, closed.
            await server.read_request(reader)
            return
        while await server.read_request(reader) is not None:
            writer.write(OK)
            await writer.drain()

    async with serving(closes_after_one) as server:
        client = Http1Client("127.0.0.1", server.port, limit=1)
        first = await client.request("POST", "/", {}, b"1")
        second = await client.request("POST", "/", {}, b"2")
        await client.aclose()
    assert (first.status, second.status) == (200, 200)
    assert server.connections == 2
    assert [r[-1:] for r in server.requests] == [b"1", b"2", b"2"]


async def test_a_fresh_connection_closed_without_a_reply_is_not_retried() -> None:
    async def hangs_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await server.read_request(reader)

    async with serving(hangs_up) as server:
        client = Http1Client("127.0.0.1", server.port, limit=1)
        with pytest.raises(ConnectionResetError):
            await client.request("POST", "/", {}, b"x")
        await client.aclose()
    assert server.connections == 1


async def test_a_close_mid_reply_is_a_reset_not_a_response() -> None:
    async with serving(first_request(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")) as server:
        client = Http1Client("127.0.0.1", server.port, limit=1)
        with pytest.raises(ConnectionResetError):
            await client.request("POST", "/", {}, b"x")
        await client.aclose()
    assert len(server.requests) == 1  # not sent again: the server had started to answer


@pytest.mark.parametrize(
    "reply",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (MAX_HEAD + 10) + b"\r\n\r\n",
    ],
    ids=["garbage", "bad-length", "upgrade", "head-over-limit"],
)
async def test_an_unreadable_reply_is_a_protocol_error(reply: bytes) -> None:
    async with serving(first_request(reply, hold=True)) as server:
        client = Http1Client("127.0.0.1", server.port, limit=1)
        with pytest.raises(ProtocolError) as caught:
            await asyncio.wait_for(client.request("POST", "/", {}, b"x"), timeout=10)
        await client.aclose()
    assert b"a" * 100 not in str(caught.value).encode()  # the error names the defect, never the bytes


async def test_a_body_past_the_limit_is_dropped_and_the_connection_kept() -> None:
    big = b"z" * 300_000

    async with serving(
        every_request(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: %d\r\n\r\n" % len(big) + big)
    ) as server:
        client = Http1Client("127.0.0.1", server.port, limit=1, body_limit=1000)
        first = await client.request("POST", "/", {}, b"x")
        second = await client.request("POST", "/", {}, b"x")
        await client.aclose()
    assert (first.status, len(first.body), len(second.body)) == (500, 1000, 1000)
    assert server.connections == 1


async def test_a_request_cancelled_by_its_timeout_does_not_leave_its_reply_for_the_next() -> None:
    async def late_then_fast(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        while await server.read_request(reader) is not None:
            if len(server.requests) == 1:
                await asyncio.sleep(0.5)
                writer.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\nlate")
            else:
                writer.write(OK)
            await writer.drain()

    async with serving(late_then_fast) as server:
        client = Http1Client("127.0.0.1", server.port, limit=1)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await client.request("POST", "/", {}, b"slow")
        response = await client.request("POST", "/", {}, b"fast")
        await client.aclose()
    assert (response.status, response.body) == (200, b"ok")
    assert server.connections == 2


async def test_headers_cannot_smuggle_lines_or_a_second_length() -> None:
    async with serving(keep_alive) as server:
        client = Http1Client("127.0.0.1", server.port, limit=1)
        with pytest.raises(ValueError, match="line break"):
            await client.request("POST", "/", {"X-Evil": "a\r\nX-Injected: 1"}, b"x")
        await client.request("POST", "/", {"Content-Length": "999", "Host": "hooks.example.com"}, b"x")
        await client.aclose()
    assert len(server.requests) == 1
    head = server.requests[0].split(b"\r\n\r\n")[0].split(b"\r\n")
    assert b"Content-Length: 1" in head and b"Content-Length: 999" not in head
    assert [line for line in head if line.lower().startswith(b"host:")] == [b"Host: hooks.example.com"]


async def test_the_webhook_channel_escapes_its_target_and_classifies_a_reset() -> None:
    async with serving(first_request(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\npart")) as server:
        url = f"http://127.0.0.1:{server.port}/a path/é?q=1 2&ok=%41"
        channel = WebhookChannel("hook", WebhookConfig(type="webhook", url=url))
        try:
            outcome = await channel.send(Message("t", "b"))
        finally:
            await channel.aclose()
    assert outcome == Outcome.retryable("connection reset")
    assert server.requests[0].startswith(b"POST /a%20path/%C3%A9?q=1%202&ok=%41 HTTP/1.1\r\n")


async def test_the_webhook_channel_keeps_a_hostile_replys_body_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    huge = b"{" + b" " * 5_000_000 + b"}"
    kept: list[int] = []

    import router.channels.webhook as webhook_module

    classify = webhook_module.classify_status

    def recording(status: int, headers: dict[str, str] | None = None, body: bytes | None = None) -> Outcome:
        kept.append(len(body or b""))
        return classify(status, headers, body)

    async with serving(
        every_request(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: %d\r\n\r\n" % len(huge) + huge)
    ) as server:
        channel = WebhookChannel("hook", WebhookConfig(type="webhook", url=f"http://127.0.0.1:{server.port}/"))
        monkeypatch.setattr(webhook_module, "classify_status", recording)
        try:
            outcomes = [await channel.send(Message("t", "b")) for _ in range(2)]
        finally:
            await channel.aclose()
    assert [o.reason for o in outcomes] == ["HTTP 503 Service Unavailable"] * 2
    assert kept == [65_536, 65_536]  # 64 KiB of each 5 MB reply kept, the rest read and dropped
    assert server.connections == 1
