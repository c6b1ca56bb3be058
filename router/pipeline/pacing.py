"""Channel pacing: keep every channel's sends under its rate limit, across all router processes.

Just before the send, a delivery reserves the channel's next send slot in the state store
(shared by every process on the same store) and waits for it. A slot more than ``hold`` away
means the channel is saturated: the delivery is then folded into a summary message (chat
channels, by default; and so is every delivery after it until the flood has been quiet for a
fold window) or waits as a durable record that keeps its slot, so that a burst never queues
without bound in memory. When the provider answers 429 (or sends Retry-After) the
channel is blocked in the store until then: no process sends to it before the provider said so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace

from router.channels.base import Channel, ChannelConfig, effective_fold, effective_rate_limit
from router.core.delivery import Delivery
from router.core.message import Outcome
from router.core.records import RetryRecord
from router.pipeline import fold
from router.pipeline.chain import Next
from router.pipeline.hops import hop_delay
from router.state.base import StateStore
from router.support.metrics import Metrics
from router.transports.base import Transport
from router.transports.dead_letters import delivery_headers

log = logging.getLogger("router.delivery")

HEADROOM = 0.1
"""Fraction of the period added between sends, and JITTER seconds: a send can reach the provider
a little late (a busy event loop, the network), and a late one must not make ``limit + 1``
arrive inside one of the provider's windows."""
JITTER = 0.05
MIN_HOLD = 1.0
MIN_QUEUE = 3
"""Sends that may queue for a channel before it counts as saturated, however slow it is."""
SEND_GUARD = "\x1fsent"
"""Suffix of the state key that records when the last send on a channel began."""
SLOT_META = "x-router-slot"
"""Message meta of a deferred delivery: the epoch of the slot it reserved (removed before sending)."""


@dataclass(frozen=True, slots=True)
class Pace:
    """How one channel is paced."""

    limit: int
    period: float
    fold: bool

    @property
    def interval(self) -> float:
        """Seconds between two sends (one at a time: a burst of ``limit`` could straddle two of the
        provider's windows and put nearly twice the limit in one)."""
        return (self.period * (1 + HEADROOM) + JITTER) / self.limit

    @property
    def hold(self) -> float:
        """The longest a send waits for its slot in the process, and past which the channel is
        saturated: one period, at least a second and MIN_QUEUE sends."""
        return max(self.period, MIN_HOLD, MIN_QUEUE * self.interval)

    @property
    def fold_window(self) -> float:
        """How long a fold bucket collects before its summary goes out."""
        return 2 * self.hold


def pace_of(channel_class: type[Channel], config: ChannelConfig) -> Pace | None:
    """The pacing of a channel of ``channel_class`` configured with ``config``; None when unlimited."""
    limit = effective_rate_limit(channel_class, config)
    if limit is None:
        return None
    return Pace(limit=limit.limit, period=limit.period, fold=effective_fold(channel_class, config))


class Pacing:
    """Delivery stage, just outside the channel's concurrency bound (so that every waiting
    delivery holds a slot and a backlog shows as a long wait, not as a queue on a semaphore)."""

    def __init__(
        self,
        *,
        state: StateStore,
        transport: Transport,
        metrics: Metrics,
        paces: Mapping[str, Pace],
        sent_ttl: float,
        on_fold: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.state = state
        self.transport = transport
        self.metrics = metrics
        self.paces = dict(paces)
        self.sent_ttl = sent_ttl
        self.on_fold = on_fold
        self.clock = clock
        self.sleep = sleep
        # Channel -> until when this process keeps folding. Once a channel is saturated, every
        # delivery folds until a fold window passes without one: during a flood the channel gets
        # one summary per window instead of messages at its full rate between summaries.
        self._folding: dict[str, float] = {}

    async def __call__(self, delivery: Delivery, next: Next) -> Outcome:
        pace = self.paces.get(delivery.channel)
        if pace is None:
            return await next(delivery)
        slot = _take_slot(delivery)
        foldable = pace.fold and delivery.rule != fold.FOLD_RULE  # a summary never folds: it waits
        if slot is None and foldable and self._folding.get(delivery.channel, 0.0) > self.clock():
            return await self._fold(delivery, pace)
        waited = 0.0
        while True:
            now = self.clock()
            fresh = slot is None
            if slot is None:
                most = pace.hold if foldable else None
                wait = await self.state.pace(delivery.channel, 1, pace.interval, max_wait=most)
                if wait > pace.hold and foldable:
                    return await self._fold(delivery, pace)
                now = self.clock()
                slot = now + wait  # measured after the call: a slot taken late is never early
            wait = slot - now
            if wait > pace.hold:
                return await self._defer(delivery, slot, wait, pace)
            if wait > 0:
                await self.sleep(wait)
                waited += wait
            elif fresh:
                break  # reserved this instant, after any block
            # The slot was reserved before a 429 that came meanwhile: such a block still holds.
            if await self.state.blocked_for(delivery.channel) <= 0:
                break
            slot = None
        waited += await self._space_from_last_send(delivery.channel, pace)
        self.metrics.pacing_wait.labels(delivery.channel).observe(waited)
        outcome = await next(delivery)
        if outcome.status == "retry" and (outcome.retry_after is not None or outcome.reason.startswith("HTTP 429")):
            pause = outcome.retry_after if outcome.retry_after is not None else pace.period
            await self.state.block(delivery.channel, self.clock() + pause)
            self.metrics.channel_rate_limited.labels(delivery.channel).inc()
            log.warning(
                "channel %s asked to wait %.3gs; every process holds its sends until then",
                delivery.channel,
                pause,
                extra={"fields": {"channel": delivery.channel, "retry_after": pause}},
            )
        return outcome

    async def _space_from_last_send(self, channel: str, pace: Pace) -> float:
        """Wait until the last send on ``channel`` (by any process) began an interval ago.

        Slots are reserved ahead; a send that began late (a busy event loop, a slow semaphore)
        would otherwise be followed closely by the next one, on time. This second reservation is
        taken only when the send begins, and only if it is due now, so it spaces actual sends.
        """
        waited = 0.0
        while (gap := await self.state.pace(channel + SEND_GUARD, 1, pace.interval, max_wait=0)) > 0:
            await self.sleep(gap)
            waited += gap
        return waited

    async def _fold(self, delivery: Delivery, pace: Pace) -> Outcome:
        self._folding[delivery.channel] = self.clock() + pace.fold_window
        added = await fold.fold(self.state, delivery, window=pace.fold_window, sent_ttl=self.sent_ttl)
        self.metrics.channel_folded.labels(delivery.channel).inc()
        if added.full:
            self.on_fold()
        return Outcome("skipped", f"folded into a summary ({added.count} so far): channel saturated")

    async def _defer(self, delivery: Delivery, slot: float, wait: float, pace: Pace) -> Outcome:
        """Keep the reserved slot in a durable record that comes back shortly before it."""
        message = replace(delivery.message, meta={**delivery.message.meta, SLOT_META: slot})
        record = RetryRecord(
            kind="delivery",
            event=delivery.event,
            rule=delivery.rule,
            # The record runs attempt ``attempt - 1 + 1``: waiting for a slot is not a failed attempt.
            attempt=delivery.attempt - 1,
            channel=delivery.channel,
            message=message,
            last_error="waiting for the channel's rate limit",
        )
        delay = hop_delay(wait, pace.hold)
        await self.transport.schedule_retry(record.to_bytes(), delay=delay, headers=delivery_headers(delivery))
        self.metrics.channel_deferred.labels(delivery.channel).inc()
        return Outcome("skipped", f"deferred {wait:.3g}s: waiting for the channel's rate limit")


def _take_slot(delivery: Delivery) -> float | None:
    """The slot a deferred delivery reserved earlier, removed from its message (it is not content)."""
    meta = delivery.message.meta
    if SLOT_META not in meta:
        return None
    try:
        slot = float(meta[SLOT_META])
    except (TypeError, ValueError):
        slot = None
    delivery.message = replace(delivery.message, meta={k: v for k, v in meta.items() if k != SLOT_META})
    return slot
