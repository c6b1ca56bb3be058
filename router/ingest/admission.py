"""What `POST /events` may take on at once: body bytes being read, and events waiting in the queue.

:class:`ReadBudget` bounds the request body bytes being read or held over all requests
(``ingest.max_reading_bytes``). A request reserves its declared ``Content-Length`` (or the
request limit when the body is chunked) before a byte of it is read; when the budget cannot
cover it the request gets ``503`` with ``Retry-After`` and its connection is closed unread. So
a body whose HMAC must be checked before anything else is held whole for at most as many
clients as the budget allows, whatever the number of connections.

:class:`Backlog` bounds the events waiting in the queue (``ingest.max_queued_events``). The
depth comes from the transport (``queue_depth()``: a count in SQLite, a passive declare on
RabbitMQ), asked at most every :data:`REFRESH` seconds in the background, so a request never
waits on it; between two answers the events accepted since are added, which errs on the side
of refusing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("router.http")

REFRESH = 0.1
"""Seconds between two questions to the transport about its depth."""

RETRY_AFTER = "1"


class ReadBudget:
    """A pool of bytes; :meth:`take` never waits: it succeeds now or not at all."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_use = 0

    def take(self, size: int) -> bool:
        if self.in_use + size > self.capacity and self.in_use > 0:
            return False  # an idle budget admits one request even above capacity: it is the request limit's job
        self.in_use += size
        return True

    def give(self, size: int) -> None:
        self.in_use = max(0, self.in_use - size)


class Backlog:
    """An estimate of the queue depth, refreshed in the background, checked per request."""

    def __init__(
        self, depth: Callable[[], Awaitable[int | None]], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._depth = depth
        self._clock = clock
        self._known = 0
        self._accepted_since = 0
        self._asked_at = float("-inf")
        self._asking: asyncio.Task[None] | None = None

    def estimate(self) -> int:
        """Events waiting, as far as is known; starts a refresh when the last answer is old."""
        if self._asking is None and self._clock() - self._asked_at >= REFRESH:
            self._asked_at = self._clock()
            self._asking = asyncio.create_task(self._refresh())
        return self._known + self._accepted_since

    def accepted(self, count: int) -> None:
        self._accepted_since += count

    async def _refresh(self) -> None:
        accepted_before = self._accepted_since
        try:
            depth = await self._depth()
        except Exception as error:  # keep the last estimate: ingest must not fail on a metric
            log.debug("queue depth unavailable: %s", type(error).__name__)
            depth = None
        finally:
            self._asking = None
        if depth is not None:
            self._known = depth
            # Events accepted while the question was out may or may not be in the answer: keep them.
            self._accepted_since = max(0, self._accepted_since - accepted_before)

    async def close(self) -> None:
        task = self._asking
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
