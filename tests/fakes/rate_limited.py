"""A webhook endpoint that enforces a rate limit the way Discord's webhooks do.

At most ``limit`` requests are accepted in any ``period`` (a sliding window over the requests
it accepted); above that it answers 429 with ``{"retry_after": seconds, "global": false}`` and
a ``Retry-After`` header, as Discord does, and records the refusal.

The server runs on its own thread and event loop, as a remote service would: a busy test
loop then delays the router's requests (as a busy router would) but not the clock the server
judges them by.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class Accepted:
    at: float  # time.monotonic() on arrival
    payload: Any  # the JSON body


class RateLimitedWebhook:
    """``async with RateLimitedWebhook(limit=5, period=2.0) as hook``: POST JSON to ``hook.url``."""

    def __init__(self, *, limit: int, period: float) -> None:
        self.limit = limit
        self.period = period
        self.accepted: list[Accepted] = []
        self.refused: list[float] = []
        self._window: deque[float] = deque()
        self._thread = threading.Thread()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/webhooks/1234/token"

    async def __aenter__(self) -> RateLimitedWebhook:
        started = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(started,), name="fake-discord", daemon=True)
        self._thread.start()
        await asyncio.to_thread(started.wait, 10)
        if not self.port:
            raise RuntimeError("the fake webhook did not start")
        return self

    async def __aexit__(self, *exc: object) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            loop.call_soon_threadsafe(stop.set)
        await asyncio.to_thread(self._thread.join, 10)

    def _serve(self, started: threading.Event) -> None:
        asyncio.run(self._main(started))

    async def _main(self, started: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/api/webhooks/{id}/{token}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(runner.addresses[0][1])
        started.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        now = time.monotonic()
        while self._window and self._window[0] <= now - self.period:
            self._window.popleft()
        if len(self._window) >= self.limit:
            self.refused.append(now)
            retry_after = round(self._window[0] + self.period - now, 3)
            answer = {"message": "You are being rate limited.", "retry_after": retry_after, "global": False}
            return web.json_response(answer, status=429, headers={"Retry-After": str(retry_after)})
        self._window.append(now)
        self.accepted.append(Accepted(now, json.loads(body)))
        return web.Response(status=204)
