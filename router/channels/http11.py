"""A small HTTP/1.1 client for plain ``http://`` webhooks: kept-alive connections, one request at a time each.

Why: in issue 18's benchmark aiohttp's client was the largest part of the router's CPU per
notification (request and response objects, a writer task, the connector's bookkeeping,
multidicts: about 70% of the webhook's share, the rest being the socket write itself). This
does the same exchange with one ``bytes`` join, one write and a parser over one buffer.

Scope, on purpose narrow: ``http://`` only, no credentials in the URL, no proxy, no
compression, no cookies, redirects not followed (a 3xx is returned as it is). The webhook
channel uses aiohttp for everything else. Hostile replies cost a bounded amount: the status
line and headers are capped at :data:`MAX_HEAD` bytes, the body kept is capped by the caller
and a body longer than :data:`MAX_DRAIN` is not read: the reply counts with what was kept,
and the connection is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import cast

MAX_HEAD = 65_536
"""Bytes of status line and headers a reply may take."""
MAX_DRAIN = 1 << 20
"""Bytes of reply body read to keep a connection; past this the connection is closed instead."""


class ProtocolError(OSError):
    """The server's reply is not HTTP/1.x as this client reads it (an OSError: a connection error)."""


class _TooLong(Exception):
    """The reply's body is longer than :data:`MAX_DRAIN`: answer with what was kept, close."""


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]  # names lower-cased; a repeated header keeps its last value
    body: bytes  # at most the caller's ``keep`` bytes


class _Connection(asyncio.Protocol):
    """One TCP connection and the parser of the reply to the request in flight."""

    def __init__(self, keep: int) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[Reply] | None = None
        self.closed = False
        self.reusable = False
        self.received = False  # any byte of a reply: a stale connection fails before one arrives
        self.eof = False
        self._keep = keep
        self._reset()

    def _reset(self) -> None:
        self._head: tuple[int, dict[str, str]] | None = None
        self._length: int | None = None  # Content-Length; None: chunked or until close
        self._chunked = False
        self._body = bytearray()
        self._seen = 0

    # asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport is not an asyncio.Transport subclass, but has its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.waiter.done():
            self.close()  # bytes nobody asked for: the stream cannot be trusted for the next request
            return
        self.received = True
        self.buffer += data
        try:
            self._parse()
        except _TooLong:
            self._finish(reusable=False)  # the status counts; the rest of the body is not read
        except ProtocolError as error:
            self._fail(error)

    def eof_received(self) -> bool | None:
        self.eof = True
        if self._head is not None and self._length is None and not self._chunked:
            self._finish(reusable=False)  # a body delimited by the end of the connection
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._head is not None and self._length is None and not self._chunked:
            self._finish(reusable=False)
        self._fail(exc or ConnectionResetError("the server closed the connection"))

    # the exchange ----------------------------------------------------------------------

    async def exchange(self, request: bytes) -> Reply:
        assert self.transport is not None
        self._reset()
        self.received = False
        self.reusable = False
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _fail(self, error: BaseException) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(error)

    def _finish(self, *, reusable: bool) -> None:
        assert self._head is not None
        status, headers = self._head
        self.reusable = reusable and not self.eof and headers.get("connection", "").lower() != "close"
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(Reply(status, headers, bytes(self._body[: self._keep])))
        self._reset()
        if not self.reusable:
            self.close()

    def _take(self, count: int) -> None:
        """Move up to ``count`` body bytes from the buffer into the kept body."""
        piece = self.buffer[:count]
        del self.buffer[:count]
        room = self._keep - len(self._body)
        if room > 0:
            self._body += piece[:room]
        self._seen += len(piece)
        if self._seen > MAX_DRAIN:
            raise _TooLong

    def _parse(self) -> None:
        while True:
            if self._head is None:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buffer) > MAX_HEAD:
                        raise ProtocolError("reply headers too long")
                    return
                head = bytes(self.buffer[:end])
                del self.buffer[: end + 4]
                status, headers = _parse_head(head)
                if 100 <= status < 200:
                    continue  # an interim reply (100 Continue): the real one follows
                self._head = (status, headers)
                if status in (204, 304):
                    self._length = 0
                elif "chunked" in headers.get("transfer-encoding", "").lower():
                    self._chunked = True
                elif "content-length" in headers:
                    try:
                        self._length = int(headers["content-length"])
                    except ValueError:
                        raise ProtocolError("invalid Content-Length") from None
                    if self._length < 0:
                        raise ProtocolError("invalid Content-Length")
                if self._length is not None and self._length > MAX_DRAIN:
                    self._take(min(len(self.buffer), self._keep))
                    raise _TooLong
            if self._chunked:
                if not self._parse_chunks():
                    return
                self._finish(reusable=True)
                return
            if self._length is None:  # until the connection closes
                self._take(len(self.buffer))
                return
            self._take(self._length - self._seen)
            if self._seen < self._length:
                return
            self._finish(reusable=not self.buffer)  # bytes beyond the reply: do not trust the stream
            return

    def _parse_chunks(self) -> bool:
        """Read chunks from the buffer; True once the last chunk and its trailers were read."""
        while True:
            line_end = self.buffer.find(b"\r\n")
            if line_end < 0:
                if len(self.buffer) > MAX_HEAD:
                    raise ProtocolError("chunk header too long")
                return False
            size_text = bytes(self.buffer[:line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ProtocolError("invalid chunk size") from None
            if size == 0:
                trailers_end = self.buffer.find(b"\r\n\r\n", line_end)
                if trailers_end == line_end:  # no trailers: "0\r\n\r\n"
                    del self.buffer[: line_end + 4]
                    return True
                if trailers_end < 0:
                    return False
                del self.buffer[: trailers_end + 4]
                return True
            if len(self.buffer) < line_end + 2 + size + 2:
                if self._seen + size > MAX_DRAIN:
                    raise _TooLong
                return False
            del self.buffer[: line_end + 2]
            self._take(size)
            if self.buffer[:2] != b"\r\n":
                raise ProtocolError("chunk not followed by CRLF")
            del self.buffer[:2]


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit() or len(parts[1]) != 3:
        raise ProtocolError("not an HTTP/1.x status line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise ProtocolError("malformed header line")
        headers[name.lower()] = value.strip()
    if parts[0] == "HTTP/1.0" and headers.get("connection", "").lower() != "keep-alive":
        headers["connection"] = "close"
    return int(parts[1]), headers


class Http11Pool:
    """Up to ``limit`` kept-alive connections to one ``host:port``; a request waits for a free one."""

    def __init__(self, host: str, port: int, *, limit: int, keep: int) -> None:
        self.host = host
        self.port = port
        self.keep = keep
        self._slots = asyncio.Semaphore(limit)
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()
        self.closed = False

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(lambda: _Connection(self.keep), self.host, self.port)
        self._all.add(protocol)
        return protocol

    async def request(self, request: bytes) -> Reply:
        """Send one complete request (head and body) and read its reply; the caller bounds the time."""
        async with self._slots:
            while self._idle:
                connection = self._idle.pop()
                if connection.closed or connection.eof:
                    self._all.discard(connection)
                    continue
                try:
                    return await self._exchange(connection, request)
                except (ConnectionResetError, BrokenPipeError):
                    # A kept-alive connection the server had closed fails before any reply
                    # byte: the request is sent again on a new connection (as browsers do).
                    if connection.received:
                        raise
            return await self._exchange(await self._connect(), request)

    async def _exchange(self, connection: _Connection, request: bytes) -> Reply:
        try:
            reply = await connection.exchange(request)
        except BaseException:
            connection.close()
            self._all.discard(connection)
            raise
        if connection.reusable and not connection.closed and not self.closed:
            self._idle.append(connection)
        else:
            self._all.discard(connection)
        return reply

    async def aclose(self) -> None:
        self.closed = True
        for connection in list(self._all):
            connection.close()
        self._all.clear()
        self._idle.clear()
        with contextlib.suppress(Exception):
            await asyncio.sleep(0)  # let the transports run their close callbacks
