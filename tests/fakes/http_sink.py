"""A local HTTP server that records requests and answers scripted replies."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.intercept import ORIGINAL_HOST_HEADER


def free_port() -> int:
    """A loopback port nothing listens on (right now): connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Reply:
    """What the sink answers: a status, headers and a body, or a hang (until the sink stops)."""

    status: int = 204
    body: bytes | str | dict[str, Any] | list[Any] = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    hang: bool = False

    def encode(self) -> tuple[bytes, dict[str, str]]:
        headers = dict(self.headers)
        if isinstance(self.body, (dict, list)):
            headers.setdefault("Content-Type", "application/json")
            return json.dumps(self.body).encode(), headers
        if isinstance(self.body, str):
            return self.body.encode(), headers
        return self.body, headers


@dataclass(frozen=True)
class Recorded:
    """One request as the sink received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    body: bytes
    peer_port: int

    def json(self) -> Any:
        return json.loads(self.body)

    def text(self) -> str:
        return self.body.decode()

    @property
    def original_host(self) -> str:
        """The host the client meant to reach (before interception), else the Host header."""
        return self.headers.get(ORIGINAL_HOST_HEADER.lower(), self.headers.get("host", ""))


class HttpSink:
    """An aiohttp server on 127.0.0.1:<free port>.

    Replies queued with :meth:`reply` are used first, one per request, then ``default``.
    Use ``async with HttpSink() as sink`` in async tests, or :meth:`in_thread` in sync ones.
    """

    def __init__(self, default: Reply | None = None) -> None:
        self.default = default or Reply()
        self.requests: list[Recorded] = []
        self._queue: deque[Reply] = deque()
        self._changed = threading.Condition()
        self._runner: web.AppRunner | None = None
        self._release: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._async_waiters: list[asyncio.Event] = []
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reply(self, *replies: Reply) -> None:
        """Queue replies for the next requests, in order."""
        self._queue.extend(replies)

    async def start(self) -> HttpSink:
        self._loop = asyncio.get_running_loop()
        self._release = asyncio.Event()
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._release is not None:
            self._release.set()  # let hanging handlers finish
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> HttpSink:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        recorded = Recorded(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            peer_port=int(peer[1]) if peer else 0,
        )
        reply = self._queue.popleft() if self._queue else self.default
        with self._changed:
            self.requests.append(recorded)
            self._changed.notify_all()
        for waiter in self._async_waiters:
            waiter.set()
        if reply.hang:
            assert self._release is not None
            await self._release.wait()
        payload, headers = reply.encode()
        return web.Response(status=reply.status, body=payload, headers=headers)

    async def wait_for(self, count: int = 1, timeout: float = 10.0) -> list[Recorded]:
        """Wait until at least ``count`` requests arrived (same loop as the sink); return them all."""
        deadline = time.monotonic() + timeout
        waiter = asyncio.Event()
        self._async_waiters.append(waiter)
        try:
            while len(self.requests) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"expected {count} request(s), got {len(self.requests)}")
                waiter.clear()
                if len(self.requests) >= count:
                    break
                try:
                    await asyncio.wait_for(waiter.wait(), remaining)
                except TimeoutError:
                    continue
        finally:
            self._async_waiters.remove(waiter)
        return list(self.requests)

    def wait_for_sync(self, count: int = 1, timeout: float = 10.0) -> list[Recorded]:
        """Like :meth:`wait_for`, from a thread other than the sink's (see :meth:`in_thread`)."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.requests) >= count, timeout):
                raise AssertionError(f"expected {count} request(s), got {len(self.requests)}")
            return list(self.requests)

    @classmethod
    @contextmanager
    def in_thread(cls, default: Reply | None = None) -> Iterator[HttpSink]:
        """Run a sink on its own event loop in a background thread (for sync tests and subprocesses)."""
        sink = cls(default)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="http-sink", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(sink.start(), loop).result(10)
            yield sink
        finally:
            asyncio.run_coroutine_threadsafe(sink.stop(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()
