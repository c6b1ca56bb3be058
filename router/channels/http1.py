"""A small HTTP/1.1 client for one plain ``http://`` origin: kept-alive connections, llhttp parsing.

Why not aiohttp for this: a webhook to a fast receiver is the router's hottest delivery path,
and aiohttp's per-request machinery (request and response objects, a writer task, timers,
cookie and header bookkeeping) cost about three times the socket write it wraps (bench/README
section 7). Here a request is one ``bytes`` written once on a kept-alive connection, and its
reply is parsed by httptools (the llhttp parser Node.js and uvicorn use): the parts of HTTP/1.1
that are easy to get wrong (chunked bodies, trailers, interim 1xx replies, keep-alive rules)
are the parser's, not ours.

What it does not do, by design: TLS (``https://`` stays on aiohttp in the webhook channel),
proxies, cookies, compression, redirects (the caller decides what a 3xx means). Bounds: a
reply's head is capped at :data:`MAX_HEAD` bytes and its body kept up to ``body_limit`` bytes
(the rest is read and dropped); the caller bounds the time with a timeout around
:meth:`Http1Client.request`, and a request cancelled mid-flight closes its connection.

A request written on a reused connection that the server had already closed (its idle timeout
raced our write) is sent once more on a new connection, but only when not one byte of a reply
came back: the receiver saw at most a request cut off by the close. Webhook requests carry an
``Idempotency-Key`` for the rare receiver that did process it.
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple, cast

import httptools

from router.support.slots import Slots

MAX_HEAD = 65_536
"""Bytes of a reply's status line and headers before the connection is given up as hostile."""


_FRAMING = frozenset({"content-length", "transfer-encoding"})


class Response(NamedTuple):
    """A reply: its status, its headers (lower-case names; repeats joined by ``, ``) and its body."""

    status: int
    headers: dict[str, str]
    body: bytes


class ProtocolError(ConnectionError):
    """The server's reply was not HTTP/1.1 we can read (the message names the defect, never the bytes)."""


class _Stale(Exception):
    """A reused connection was closed before any byte of the reply: the request may be sent again."""


class _Connection(asyncio.Protocol):
    """One TCP connection: writes a request, parses its reply with llhttp, then idles in the pool."""

    def __init__(self, body_limit: int) -> None:
        self.body_limit = body_limit
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Response] | None = None
        self._reset()

    def _reset(self) -> None:
        self._received = 0  # bytes of the current reply so far
        self._head = 0
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._kept = 0
        self._status = 0
        self._headers_done = False
        self._keep_alive = False

    # ----------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self._abort()  # a reply nobody asked for: the connection can no longer be trusted
            return
        self._received += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ProtocolError("the server switched protocols"))
        except httptools.HttpParserCallbackError as error:
            cause = error.__context__
            self._fail(cause if isinstance(cause, ProtocolError) else ProtocolError("unreadable reply"))
        except httptools.HttpParserError:
            self._fail(ProtocolError("malformed reply"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._headers_done and self._until_close():
            # A body delimited by the end of the connection (no length, not chunked) ends here.
            self._finish()
        elif self._received == 0:
            waiter.set_exception(_Stale())
        else:
            waiter.set_exception(ConnectionResetError("the server closed the connection mid-reply"))

    # ----------------------------------------------------------------- llhttp callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head += len(name) + len(value) + 4
        if self._head > MAX_HEAD:
            raise ProtocolError(f"reply headers over {MAX_HEAD} bytes")
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self._headers.get(key)
        self._headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        room = self.body_limit - self._kept
        if room > 0:
            kept = body[:room]
            self._body.append(kept)
            self._kept += len(kept)

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200:
            self._reset()  # an interim reply (100 Continue, 103 Early Hints): the real one follows
            return
        # Asked here: once the callback returns, llhttp has reset what this answer is based on.
        self._keep_alive = self._parser.should_keep_alive()
        self._finish()

    # ----------------------------------------------------------------- requests

    async def exchange(self, request: bytes) -> Response:
        """Write ``request`` and wait for its whole reply; any failure or cancellation closes the connection."""
        assert self.transport is not None
        self._reset()
        waiter: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        try:
            self.transport.write(request)
            return await waiter
        except BaseException:
            self._abort()
            raise
        finally:
            self._waiter = None

    def reusable(self) -> bool:
        return not self.closed and self._keep_alive

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _until_close(self) -> bool:
        return "content-length" not in self._headers and "chunked" not in self._headers.get("transfer-encoding", "")

    def _finish(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(Response(self._status, self._headers, b"".join(self._body)))

    def _fail(self, error: Exception) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self._abort()


class Http1Client:
    """Requests to one ``host:port`` over at most ``limit`` kept-alive connections.

    Create it inside the running loop that will use it; :meth:`aclose` closes every connection.
    """

    def __init__(self, host: str, port: int, *, limit: int, body_limit: int = 65_536) -> None:
        self.host = host
        self.port = port
        self.body_limit = body_limit
        self._slots = Slots(limit)  # O(1) per request: asyncio.Semaphore walks its waiters on 3.11
        self._idle: list[_Connection] = []
        self._busy: set[_Connection] = set()
        self._closed = False
        host_header = f"[{host}]" if ":" in host else host  # an IPv6 literal
        self._host_line = f"Host: {host_header}{'' if port == 80 else f':{port}'}\r\n".encode("ascii", "ignore")

    async def request(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Response:
        """Send one request (``target``: path and query) and return its reply.

        Raises ``OSError`` (refused, reset, :class:`ProtocolError`) for what the network or the
        server did; ``ValueError`` for a header that cannot be sent (a line break in it).
        """
        request = self._serialise(method, target, headers, body)
        async with self._slots:
            connection = self._take_idle()
            if connection is not None:
                try:
                    return await self._exchange(connection, request)
                except _Stale:
                    pass  # closed by the server while idle: once more on a fresh connection
            try:
                return await self._exchange(await self._connect(), request)
            except _Stale:
                raise ConnectionResetError("the server closed the connection before replying") from None

    async def aclose(self) -> None:
        """Close every connection, idle or busy."""
        self._closed = True
        for connection in (*self._idle, *self._busy):
            connection.close()
        self._idle.clear()
        self._busy.clear()

    # ----------------------------------------------------------------- internals

    def _serialise(self, method: str, target: str, headers: dict[str, str], body: bytes) -> bytes:
        lines = [f"{method} {target} HTTP/1.1\r\n".encode("ascii"), self._host_line]
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\0" in value:
                raise ValueError(f"the value of header {name!r} contains a line break")
            lowered = name.lower()
            if lowered in _FRAMING:
                continue  # the body's length is ours to state: a second one would be request smuggling
            if lowered == "host":
                lines[1] = b""  # a configured Host header wins over the URL's
            lines.append(f"{name}: {value}\r\n".encode())
        lines.append(b"Content-Length: %d\r\n\r\n" % len(body))
        lines.append(body)
        return b"".join(lines)

    def _take_idle(self) -> _Connection | None:
        while self._idle:
            connection = self._idle.pop()  # the most recently used: the least likely to have timed out
            if not connection.closed:
                return connection
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(lambda: _Connection(self.body_limit), self.host, self.port)
        return connection

    async def _exchange(self, connection: _Connection, request: bytes) -> Response:
        self._busy.add(connection)
        try:
            response = await connection.exchange(request)
        finally:
            self._busy.discard(connection)
        if self._closed or not connection.reusable():
            connection.close()
        else:
            self._idle.append(connection)
        return response
