"""Deliver closed digest buckets (rule digests and channel folds), once, from any process.

Every router process runs a flusher; a lock per bucket lets one of them take it. For each
batch of a due bucket the flusher

1. reads the items (``digest_peek``) and claims the batch's size in the store, keyed by its
   first item (items are identified by their bytes), so that a flusher that crashed and is replaced takes the very same batch;
2. durably schedules one record that delivers the batch (its id is derived from the items:
   scheduled twice, it is delivered once, as the idempotency ledger skips the copy);
3. removes exactly those items (``digest_drop``); items added meanwhile stay for the next batch.

A crash anywhere leaves the items in the store, to be flushed again; none is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from router.core.delivery import Delivery
from router.core.errors import DecodeError
from router.core.records import RetryRecord
from router.flow import digest
from router.flow.resume import Resume, job_headers
from router.pipeline import fold
from router.pipeline.pacing import pace_of
from router.runtime.runtime import Runtime
from router.state.base import DIGEST_RETENTION, StateStore
from router.support.log_limit import LogLimiter
from router.support.metrics import Metrics
from router.transports.base import Transport
from router.transports.dead_letters import DeadLetters, delivery_headers

log = logging.getLogger("router.flow")

FALLBACK_WINDOW = 60.0
"""Window for what remains of a bucket whose rule or channel is no longer configured."""


@dataclass(frozen=True, slots=True)
class _Plan:
    """How one bucket is flushed."""

    kind: str  # "digest" or "fold", for metrics
    window: float
    max_items: int
    send: Callable[[str, list[bytes]], Awaitable[None]]


class DigestFlusher:
    """Background task that flushes due buckets; :meth:`flush_due` is one pass."""

    def __init__(
        self,
        *,
        state: StateStore,
        transport: Transport,
        metrics: Metrics,
        runtime: Callable[[], Runtime],
        interval: float = 0.25,
        lock_ttl: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self.transport = transport
        self.metrics = metrics
        self.dead_letters = DeadLetters(transport, metrics)
        self.runtime = runtime
        self.interval = interval
        self.lock_ttl = lock_ttl
        self.clock = clock
        self.owner = f"flusher-{uuid.uuid4().hex}"
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        # A pass runs every `interval` (250 ms): a store away for a minute is one line per 10 s, not 240.
        self._failure_log = LogLimiter(10.0)

    async def start(self) -> None:
        """Start flushing in the background (idempotent)."""
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name="router-digest-flusher")

    async def close(self) -> None:
        """Stop; buckets not flushed yet stay in the store for the next start."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def wake(self) -> None:
        """Flush now rather than at the next tick (a bucket just became full)."""
        if self._wake is not None:
            self._wake.set()

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()
            try:
                await self.flush_due()
            except Exception as error:
                # The store or the broker is away: the buckets wait in the store for the next pass.
                suppressed = self._failure_log.allow(type(error).__name__)
                if suppressed is not None:
                    more = f" ({suppressed} more like it since the last line)" if suppressed else ""
                    log.warning("flushing digests failed, will try again: %s%s", type(error).__name__, more)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()

    async def flush_due(self) -> int:
        """Flush every due bucket this process can lock; returns the batches scheduled."""
        batches = 0
        for bucket in await self.state.digest_due(self.clock()):
            batches += await self.flush(bucket)
        return batches

    async def flush(self, bucket: str) -> int:
        """Schedule the batches of ``bucket`` unless another process holds it; returns how many."""
        lock = f"digest-flush:{bucket}"
        if not await self.state.acquire_lock(lock, self.owner, self.lock_ttl):
            return 0
        batches = 0
        try:
            while True:
                head = await self.state.digest_peek(bucket, 1)
                if not head:
                    break
                plan = self._plan(bucket, head[0])
                items = await self.state.digest_peek(bucket, plan.max_items)
                if not items:
                    break
                first = hashlib.blake2b(items[0], digest_size=16).hexdigest()
                held = await self.state.claim(f"digest-batch:{bucket}:{first}", str(len(items)), DIGEST_RETENTION)
                batch = items[: _size(held, len(items))]
                await plan.send(bucket, batch)
                left = await self.state.digest_drop(bucket, len(batch), plan.window, plan.max_items)
                batches += 1
                self.metrics.digests_flushed.labels(plan.kind).inc()
                if left < plan.max_items:
                    break  # the rest is a bucket of its own, with its own window
                await self.state.acquire_lock(lock, self.owner, self.lock_ttl)  # renew for the next batch
        finally:
            await self.state.release_lock(lock, self.owner)
        return batches

    # ------------------------------------------------------------------ plans

    def _plan(self, bucket: str, head: bytes) -> _Plan:
        if bucket.startswith(fold.BUCKET_PREFIX):
            channel = bucket[len(fold.BUCKET_PREFIX) :]
            runtime = self.runtime()
            config = runtime.loaded.channel_configs.get(channel)
            pace = pace_of(runtime.channel_class(channel), config) if config is not None else None
            window = pace.fold_window if pace is not None else FALLBACK_WINDOW
            return _Plan("fold", window, fold.MAX_ITEMS, self._send_fold)
        try:
            rule_name = digest.decode_item(head).rule
        except DecodeError:
            rule_name = ""
        rule = self.runtime().rule(rule_name)
        spec = rule.digest if rule is not None else None
        if spec is None:
            # The rule is gone (its record is dead-lettered as rule-removed) or no longer digests:
            # deliver what was collected all the same, in batches of the fold size.
            return _Plan("digest", FALLBACK_WINDOW, fold.MAX_ITEMS, self._send_digest)
        return _Plan("digest", spec.window, spec.max_events, self._send_digest)

    async def _send_digest(self, bucket: str, batch: list[bytes]) -> None:
        items: list[digest.DigestItem] = []
        for raw in batch:
            try:
                items.append(digest.decode_item(raw))
            except DecodeError as error:
                await self.dead_letters.digest_item(raw, str(error))
        if not items:
            return
        rule = items[0].rule
        events = digest.unique_events([item.event for item in items])
        digest_id = digest.batch_id(bucket, batch)
        event = digest.digest_event(digest_id, events)
        record = Resume("admitted", events=tuple(events)).record(event, rule, attempt=0)
        await self.transport.schedule_retry(record.to_bytes(), delay=0.0, headers=job_headers(event, rule, 0))
        log.info(
            "digest flushed",
            extra={"fields": {"rule": rule, "digest_id": digest_id, "events": len(events)}},
        )

    async def _send_fold(self, bucket: str, batch: list[bytes]) -> None:
        channel = bucket[len(fold.BUCKET_PREFIX) :]
        items: list[fold.FoldItem] = []
        for raw in batch:
            try:
                items.append(fold.decode_item(raw))
            except DecodeError as error:
                await self.dead_letters.digest_item(raw, str(error))
        if not items:
            return
        summary_id = digest.batch_id(bucket, batch)
        event, message = fold.summary(channel, summary_id, items)
        record = RetryRecord(
            kind="delivery", event=event, rule=fold.FOLD_RULE, attempt=0, channel=channel, message=message
        )
        delivery = Delivery(event, fold.FOLD_RULE, channel, "", message, attempt=0)
        await self.transport.schedule_retry(record.to_bytes(), delay=0.0, headers=delivery_headers(delivery))
        log.info(
            "channel summary flushed",
            extra={"fields": {"channel": channel, "summary_id": summary_id, "folded": len(items)}},
        )


def _size(held: str, available: int) -> int:
    """The claimed batch size, within what is there (a garbled claim means: take what is there)."""
    try:
        size = int(held)
    except ValueError:
        return available
    return min(max(size, 1), available)
