"""The recorder: one cheap call per verdict or attempt into an in-memory buffer, written in batches.

The engine, flow control and the ``Resolve`` stage call :class:`Recorder` methods; each call is an
append to a list (no I/O, no await). Every ``interval`` seconds a background task hands the buffer
to the recorder's own thread, which builds the rows and passes them to the store: in ``router
serve`` a ``WriterProcess`` (``writer.py``), so that no SQL runs under the event loop's
interpreter lock. A slow, full or unreachable store never delays or loses a delivery:
when the buffer is full, or a batch cannot be written, that history is dropped, counted in
``router_activity_dropped_total`` and logged once (and once more when writing works again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

from router.activity.records import error_class, http_status
from router.activity.store import Batch
from router.support.metrics import Metrics

if TYPE_CHECKING:
    from router.core.delivery import Delivery
    from router.core.events import Event
    from router.core.message import Outcome

log = logging.getLogger("router.activity")

PROCESS = f"{socket.gethostname()}:{os.getpid()}"


class HistoryWriter(Protocol):
    """What the recorder needs of a store: an ``ActivityStore``, or a ``WriterProcess`` in front of one."""

    def open(self) -> None: ...
    def close(self) -> None: ...
    def describe(self) -> str: ...
    def write(self, batch: Batch) -> None: ...
    def prune(self, now: float, retention: float, max_bytes: int) -> int: ...


class NullRecorder:
    """Activity off: every call does nothing."""

    enabled = False

    def event(self, event: Event, size: int, schema: str) -> None:
        """Record an event's arrival."""

    def verdict(self, event_id: str, rule: str, verdict: str, reason: str = "") -> None:
        """Record one rule's verdict on an event."""

    def attempt(
        self,
        delivery: Delivery,
        outcome: Outcome,
        action: str,
        started: float,
        duration: float,
        retry_at: float | None,
        dead_letter_id: str | None = None,
    ) -> None:
        """Record one delivery attempt."""

    def job(self, event_id: str, rule: str, job: str, outcome: str, error: str | None = None) -> None:
        """Record one job run."""

    def rejected(
        self,
        event_id: str,
        *,
        size: int,
        reason: str,
        error: str,
        dead_letter_id: str | None,
        event: Event | None = None,
        routing_key: str | None = None,
    ) -> None:
        """Record a message that never became a routed event (poison, oversize, schema, forged record).

        ``event`` when it decoded (a schema failure); otherwise only what is safe to keep: the id,
        the size, the routing key, the reason and the dead letter's id, never the bytes."""


class Recorder(NullRecorder):
    """Buffers activity records and writes them in batches through ``store`` (docs/activity.md)."""

    enabled = True

    def __init__(
        self,
        store: HistoryWriter,
        *,
        metrics: Metrics,
        transport: str,
        capacity: int = 100_000,
        interval: float = 0.2,
        retention: float = 7 * 86400.0,
        max_bytes: int = 1 << 30,
        prune_interval: float = 10.0,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.transport = transport
        self.capacity = capacity
        self.interval = interval
        self.retention = retention
        self.max_bytes = max_bytes
        self.prune_interval = prune_interval
        self._buffer: list[tuple[Any, ...]] = []
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="router-activity")
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._failing = False  # the store failed last time: logged once until it works again
        self._full_logged = False
        self._closing = False

    # ----------------------------------------------------------------- the hot path

    def _put(self, item: tuple[Any, ...]) -> None:
        if len(self._buffer) >= self.capacity:
            self.metrics.activity_dropped.inc()
            if not self._full_logged:
                self._full_logged = True
                log.warning("activity buffer full (%d records): history is being dropped", self.capacity)
            return
        self._buffer.append(item)

    def event(self, event: Event, size: int, schema: str) -> None:
        self._put(("e", time.time(), event, size, schema, self.transport, PROCESS))

    def verdict(self, event_id: str, rule: str, verdict: str, reason: str = "") -> None:
        self._put(("v", time.time(), event_id, rule, verdict, reason))

    def attempt(
        self,
        delivery: Delivery,
        outcome: Outcome,
        action: str,
        started: float,
        duration: float,
        retry_at: float | None,
        dead_letter_id: str | None = None,
    ) -> None:
        self._put(("a", started, delivery, outcome, action, duration, retry_at, dead_letter_id))

    def job(self, event_id: str, rule: str, job: str, outcome: str, error: str | None = None) -> None:
        self._put(("j", time.time(), event_id, rule, job, outcome, error))

    def rejected(
        self,
        event_id: str,
        *,
        size: int,
        reason: str,
        error: str,
        dead_letter_id: str | None,
        event: Event | None = None,
        routing_key: str | None = None,
    ) -> None:
        # The same bounded buffer as every record: a flood of poison drops history, never grows it.
        self._put(
            (
                "r",
                time.time(),
                event_id,
                size,
                reason,
                error,
                dead_letter_id,
                event,
                routing_key,
                self.transport,
                PROCESS,
            )
        )

    # ----------------------------------------------------------------- the writer

    async def start(self) -> None:
        """Open the store (in its thread) and start writing; a store that cannot open is retried by the writer."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self.store.open)
        except Exception as error:
            self._store_failed(error)
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        """Write what is buffered (bounded: one last batch) and close the store."""
        self._closing = True
        if self._task is not None:
            self._wake.set()
            try:
                await asyncio.wait_for(self._task, timeout=10)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(self._executor, self.store.close), timeout=10)
        except Exception as error:
            log.debug("activity store did not close cleanly: %s", type(error).__name__)
        self._executor.shutdown(wait=False)

    async def flush(self) -> None:
        """Write everything buffered now (tests, shutdown)."""
        await self._write_once()

    async def _run(self) -> None:
        last_prune = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval)
            self._wake.clear()
            await self._write_once()
            if self._closing:
                return
            now = time.monotonic()
            if now - last_prune >= self.prune_interval:
                last_prune = now
                await self._prune()

    async def _write_once(self) -> None:
        if not self._buffer:
            return
        batch, self._buffer = self._buffer, []
        loop = asyncio.get_running_loop()
        try:
            written = await loop.run_in_executor(self._executor, self._write, batch)
        except Exception as error:
            self.metrics.activity_dropped.inc(len(batch))
            self._store_failed(error)
            return
        self.metrics.activity_written.inc(written)
        if self._failing:
            self._failing = False
            log.warning("activity store is writable again: recording history")
        self._full_logged = False

    def _write(self, items: list[tuple[Any, ...]]) -> int:
        batch = build_batch(items)
        self.store.write(batch)
        return len(items)

    async def _prune(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self.store.prune, time.time(), self.retention, self.max_bytes)
        except Exception as error:
            self._store_failed(error)

    def _store_failed(self, error: Exception) -> None:
        if not self._failing:
            self._failing = True
            # Only the type and the store's own secret-free description: a driver's message may carry the URL.
            log.error(
                "activity store unavailable (%s: %s): history is being dropped, deliveries go on",
                self.store.describe(),
                getattr(error, "kind", type(error).__name__),
            )


def build_batch(items: list[tuple[Any, ...]]) -> Batch:
    """Turn buffered calls into rows (in the store's thread: none of this runs on the event loop)."""
    from router.activity.records import REJECTED, rejection_error, to_json

    batch = Batch()
    for item in items:
        kind = item[0]
        if kind == "r":
            _, at, event_id, size, reason, error, letter_id, event, routing_key, transport, process = item
            if event is not None:
                envelope: dict[str, Any] = {
                    "id": event.id,
                    "type": event.type,
                    "source": event.source,
                    "subject": event.subject,
                    "time": event.time,
                    "data": event.data,
                }
                row_type, source, subject, schema = event.type, event.source, event.subject, "refused"
            else:
                # No "type": the story of a message that never decoded has no rule verdicts to explain.
                envelope = {"id": event_id, "routing_key": routing_key}
                row_type, source, subject, schema = routing_key or "", None, None, None
            batch.events.append(
                (
                    event_id,
                    at,
                    row_type,
                    source,
                    subject,
                    transport,
                    process,
                    size,
                    schema,
                    REJECTED,
                    to_json(envelope),
                    reason,
                    rejection_error(error),
                    letter_id,
                )
            )
        elif kind == "e":
            _, at, event, size, schema, transport, process = item
            envelope = {
                "id": event.id,
                "type": event.type,
                "source": event.source,
                "subject": event.subject,
                "time": event.time,
                "data": event.data,
            }
            batch.events.append(
                (
                    event.id,
                    at,
                    event.type,
                    event.source,
                    event.subject,
                    transport,
                    process,
                    size,
                    schema,
                    "dead" if schema == "refused" else "skipped",
                    to_json(envelope),
                    None,
                    None,
                    None,
                )
            )
        elif kind == "v":
            _, at, event_id, rule, verdict, reason = item
            batch.verdicts.append((event_id, at, rule, verdict, reason))
        elif kind == "a":
            _, started, delivery, outcome, action, duration, retry_at, *rest = item
            letter_id = rest[0] if rest else None
            message = delivery.message
            message_json = to_json({"title": message.title, "body": message.body, "payload": message.payload})
            reason = outcome.reason or None
            batch.attempts.append(
                (
                    delivery.event.id,
                    started,
                    delivery.rule,
                    delivery.channel,
                    delivery.channel_type,
                    delivery.key,
                    delivery.attempt,
                    message_json,
                    round(duration * 1000, 3),
                    action,
                    retry_at,
                    http_status(outcome.reason),
                    error_class(outcome.status, outcome.reason),
                    reason,
                    letter_id,
                )
            )
        elif kind == "j":
            _, at, event_id, rule, job, outcome, error = item
            batch.jobs.append((event_id, at, rule, job, outcome, error))
    return batch
