"""Connection-level limits of the HTTP server: a cap on open connections and a header deadline.

Why a layer of its own: aiohttp 3.14's server documents no header-read timeout and no cap on
connections. Its ``keepalive_timeout`` (default 3,630 s) is armed when a connection opens and
after each response, and when it expires it closes a connection still waiting for a complete
request; nothing bounds the number of connections but the open-file limit, and once that is
reached ``accept()`` fails for everyone, ``/healthz`` included. So each connection's protocol
(aiohttp's ``RequestHandler``, unchanged) is wrapped in a :class:`GuardedProtocol` that sees
the connection before aiohttp does, through the public ``asyncio.Protocol`` interface only:

- **Cap.** At most ``max_connections`` are open. A new connection beyond it first evicts the
  connection that has waited longest for its request headers (a slow or idle client: the
  slowloris pattern), so that a well-behaved request (a health probe) still gets in; when
  every open connection is busy with a request, the new one gets ``503`` with ``Retry-After``
  and is closed without anything being read from it.
- **Header deadline.** A connection must deliver a complete request head within
  ``header_timeout`` of opening, and the next one within ``header_timeout`` of the previous
  response (the idle keep-alive): otherwise it is closed. The clock stops while the
  application handles a request (:func:`guard_middleware`); the body has its own deadline
  there (``ingest.body_timeout``, in :mod:`router.ingest.http`).
- **One log line per interval**, not one per connection: how many were refused, evicted or
  timed out (an attack would otherwise flood the log).

:func:`raise_open_file_limit` raises the soft ``RLIMIT_NOFILE`` to the hard limit at start-up,
and :func:`connection_cap` keeps the cap below it, leaving room for the files and sockets the
router itself needs.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

log = logging.getLogger("router.http")

RESERVED_FILES = 128
"""Descriptors kept free of HTTP connections: the state store, the queue, the broker, channels."""

LOG_INTERVAL = 60.0

_REFUSAL_BODY = b'{"error": "too many connections; retry later"}'
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n"
    b"Content-Length: " + str(len(_REFUSAL_BODY)).encode() + b"\r\n\r\n" + _REFUSAL_BODY
)


def raise_open_file_limit() -> int:
    """Raise the soft open-file limit to the hard one; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == resource.RLIM_INFINITY:
        return soft if soft != resource.RLIM_INFINITY else 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as error:  # a sandbox may refuse: keep the soft limit
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, error)
    return soft


def connection_cap(configured: int, open_files: int) -> int:
    """``configured``, lowered when needed to stay below the open-file limit."""
    return max(1, min(configured, open_files - RESERVED_FILES))


class ConnectionGuard:
    """Counts the open connections, enforces the cap and the header deadline, logs what it did."""

    def __init__(self, *, max_connections: int, header_timeout: float, log_interval: float = LOG_INTERVAL) -> None:
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.log_interval = log_interval
        self._open: dict[asyncio.BaseTransport, GuardedProtocol] = {}
        # Connections waiting for request headers, oldest first (dicts keep insertion order).
        self._waiting: dict[GuardedProtocol, float] = {}
        self._counts = {"refused": 0, "evicted": 0, "timed_out": 0}
        self._last_log = float("-inf")
        self._flush: asyncio.TimerHandle | None = None

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def protocol_factory(self, inner: Callable[[], asyncio.BaseProtocol]) -> Callable[[], GuardedProtocol]:
        """What ``loop.create_server`` gets: aiohttp's protocol factory, guarded."""
        return lambda: GuardedProtocol(inner, self)

    # ------------------------------------------------------------- called by the protocol

    def admit(self, protocol: GuardedProtocol, transport: asyncio.BaseTransport) -> bool:
        if len(self._open) >= self.max_connections:
            oldest = next(iter(self._waiting), None)
            if oldest is None:
                self._note("refused")
                return False
            self._note("evicted")
            oldest.close()  # connection_lost (later) forgets it; free its slot now
            self._forget(oldest)
        self._open[transport] = protocol
        self.wait_for_headers(protocol)
        return True

    def wait_for_headers(self, protocol: GuardedProtocol) -> None:
        loop = asyncio.get_running_loop()
        self._waiting.pop(protocol, None)
        self._waiting[protocol] = loop.time()
        protocol.arm(loop.call_later(self.header_timeout, self._expired, protocol))

    def _expired(self, protocol: GuardedProtocol) -> None:
        if protocol in self._waiting:
            self._note("timed_out")
            protocol.close()
            self._forget(protocol)

    def _forget(self, protocol: GuardedProtocol) -> None:
        self._waiting.pop(protocol, None)
        protocol.arm(None)
        transport = protocol.transport
        if transport is not None and self._open.get(transport) is protocol:
            del self._open[transport]

    def lost(self, protocol: GuardedProtocol) -> None:
        self._forget(protocol)

    # ------------------------------------------------------------- called by the middleware

    def request_started(self, transport: asyncio.BaseTransport | None) -> None:
        protocol = self._open.get(transport) if transport is not None else None
        if protocol is not None:
            self._waiting.pop(protocol, None)
            protocol.arm(None)

    def request_finished(self, transport: asyncio.BaseTransport | None) -> None:
        protocol = self._open.get(transport) if transport is not None else None
        if protocol is not None and not protocol.closed:
            self.wait_for_headers(protocol)

    # ------------------------------------------------------------------------ logging

    def _note(self, what: str) -> None:
        self._counts[what] += 1
        loop = asyncio.get_running_loop()
        if loop.time() - self._last_log >= self.log_interval:
            self._log(loop)
        elif self._flush is None:  # what happens until the interval ends goes in the next line
            self._flush = loop.call_at(self._last_log + self.log_interval, self._log, loop)

    def _log(self, loop: asyncio.AbstractEventLoop) -> None:
        self._flush = None
        counts = self._counts
        if not any(counts.values()):
            return
        self._last_log = loop.time()
        log.warning(
            "ingest connection limits: %d connections refused (all %d slots busy), %d evicted while "
            "waiting for their request headers, %d closed for not sending them within %g s",
            counts["refused"],
            self.max_connections,
            counts["evicted"],
            counts["timed_out"],
            self.header_timeout,
            extra={"fields": {**counts, "max_connections": self.max_connections, "open": len(self._open)}},
        )
        self._counts = dict.fromkeys(counts, 0)

    def close(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None


class GuardedProtocol(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the guard's admission and deadline."""

    def __init__(self, inner: Callable[[], asyncio.BaseProtocol], guard: ConnectionGuard) -> None:
        self._make_inner = inner
        self._inner: Any = None
        self._guard = guard
        self.transport: asyncio.BaseTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.closed = False

    def arm(self, timer: asyncio.TimerHandle | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = timer

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if not self._guard.admit(self, transport):
            self.closed = True
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(REFUSAL)
            transport.close()  # nothing is read from a refused connection
            return
        self._inner = self._make_inner()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None and not self.closed:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._inner is not None:
            result: bool | None = self._inner.eof_received()
            return result
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._guard.lost(self)
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


def guard_middleware(guard: ConnectionGuard) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Stops the header clock while the application handles a request, restarts it after."""

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        transport = request.transport
        guard.request_started(transport)
        try:
            return await handler(request)
        finally:
            guard.request_finished(transport)

    return middleware


class GuardedSite(web.BaseSite):
    """A TCP site whose connections go through a :class:`ConnectionGuard`."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._guard = guard

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._guard.protocol_factory(server), self._host, self._port, backlog=self._backlog, reuse_address=True
        )

    async def stop(self) -> None:
        self._guard.close()
        await super().stop()
