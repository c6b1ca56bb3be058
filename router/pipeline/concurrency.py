"""Bound the sends in flight per channel, so one slow channel cannot take every worker.

A channel at its limit does not hold intake either. The transport hands out ``handlers``
messages at a time (the broker's prefetch); a full channel may keep at most half of them waiting
in memory (its sends included), so other channels always have the other half. A new delivery
beyond that share waits in memory only when the channel is known to be fast (a slot frees within
:data:`WAIT_IN_MEMORY`, by :meth:`_Channel.per_slot`), and then for that long at most: a fast
channel absorbs a burst at the cost of a moment's wait, not of a durable write and a second
handling per delivery. Otherwise it is written as a durable retry record (as a throttled or
paced one is) and resolved at once, so its event is acknowledged and its handler goes to the
next event. The record takes a turn in a virtual queue (one send time, as recently measured, per
``limit`` deliveries, at most a couple of send times ahead) and comes back then. Back, it goes
ahead of every new delivery waiting in memory (as many such returns wait at once as get a slot
within :data:`RETURN_WAIT`, and at least ``limit``, one turnover of the slots; more take a fresh
turn), so deferred deliveries are never starved by a steady stream of new ones. It keeps its attempt number: waiting is not a failed attempt. Without a transport
(tests, tools) a full channel is waited for in memory.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping
from dataclasses import replace

from router.core.delivery import Delivery
from router.core.message import Outcome
from router.core.records import RetryRecord
from router.pipeline.chain import Next
from router.support.metrics import Metrics
from router.support.slots import Slots
from router.transports.base import Transport
from router.transports.dead_letters import delivery_headers

DEFER_META = "x-router-deferred"
"""Message meta of a delivery deferred by a full channel (removed before sending)."""
MIN_DELAY = 0.05
WAIT_IN_MEMORY = 0.1  # seconds a delivery may wait for a slot before it is deferred instead
RETURN_WAIT = 1.0  # seconds a record back from a deferral may wait for a slot, ahead of new deliveries
MAX_DELAY = 30.0
FIRST_ESTIMATE = 1.0  # seconds per send, until the channel's first send finished
_SMOOTHING = 0.5  # follows a channel that slows down within a few sends
RATE_WINDOW = 0.1  # seconds of finished sends behind the rate at which slots free up


class _Channel:
    """One channel's slots, how long its sends take, and the turns handed to deferred deliveries."""

    __slots__ = (
        "completed",
        "interval",
        "limit",
        "measured",
        "next_turn",
        "send_time",
        "slots",
        "spare",
        "window_start",
    )

    def __init__(self, limit: int, handlers: int) -> None:
        self.limit = limit
        self.spare = max(0, handlers // 2 - limit)  # waiters in memory within the channel's share
        self.slots = Slots(limit)
        self.send_time = FIRST_ESTIMATE
        self.measured = False  # until a send finished, send_time is a guess
        self.next_turn = 0.0  # monotonic time of the last turn handed out
        self.interval = math.inf  # seconds between finished sends over the last window: unknown yet
        self.window_start = time.monotonic()
        self.completed = 0  # sends finished since window_start

    def per_slot(self) -> float:
        """Seconds until the next slot frees while every slot is busy.

        ``send_time / limit`` when sends are what takes the time. When the process itself is
        saturated (a flood), each send's measured time also holds the event loop's queueing,
        though slots still free at the rate sends actually finish: the finished sends of the
        last :data:`RATE_WINDOW` say so, and the smaller of the two wins. A channel that slows
        down raises both; one that hangs finishes nothing, and the wait in memory is cut at
        :data:`WAIT_IN_MEMORY` whatever the estimate says.
        """
        return min(self.send_time / self.limit, self.interval)

    def turn_is_near(self) -> bool:
        """Whether, as sends are known to go now, one more waiter gets a slot within :data:`WAIT_IN_MEMORY`."""
        return self.measured and (self.slots.waiting + 1) * self.per_slot() <= WAIT_IN_MEMORY

    def return_is_near(self) -> bool:
        """Whether one more returning record gets a slot within :data:`RETURN_WAIT`, as sends are known to go now."""
        return self.measured and (self.slots.waiting_first + 1) * self.per_slot() <= RETURN_WAIT

    def sent(self, elapsed: float) -> None:
        """Learn from one send's duration."""
        self.send_time = elapsed if not self.measured else self.send_time + _SMOOTHING * (elapsed - self.send_time)
        self.measured = True
        now = time.monotonic()
        self.completed += 1
        span = now - self.window_start
        if span >= RATE_WINDOW:
            # Over a window that held an idle spell this is long, and send_time / limit wins.
            self.interval = span / self.completed
            self.window_start, self.completed = now, 0

    def delay(self) -> float:
        """How long a delivery deferred now waits: the next turn in a virtual queue.

        The queue advances by :meth:`per_slot` per delivery, so the records come back at about
        the rate slots free up. Turns are handed out at most :meth:`horizon` ahead: an
        estimate taken while the channel (or the whole process) was briefly slow would otherwise
        push a burst's records minutes away and leave the channel idle once it is fast again. A
        record back before a slot is free takes a fresh turn, at the estimate of that moment.
        """
        now = time.monotonic()
        step = self.per_slot()
        self.next_turn = min(max(self.next_turn, now) + step, now + self.horizon())
        return min(MAX_DELAY, max(MIN_DELAY, self.next_turn - now))

    def horizon(self) -> float:
        """How far ahead turns are handed out: two send times, and at least a second."""
        return max(1.0, 2.0 * self.send_time)


class ChannelConcurrency:
    """At most ``limits[channel]`` sends to a channel at once; other channels are unaffected."""

    def __init__(
        self,
        limits: Mapping[str, int],
        default: int = 8,
        *,
        transport: Transport | None = None,
        metrics: Metrics | None = None,
        handlers: int = 0,
    ) -> None:
        """``handlers``: messages the transport hands out at once (its prefetch); 0 when unknown."""
        self._channels = {name: _Channel(limit, handlers) for name, limit in limits.items()}
        self._default = default
        self._handlers = handlers
        self.transport = transport
        self.metrics = metrics

    async def __call__(self, delivery: Delivery, next: Next) -> Outcome:
        channel = self._channels.get(delivery.channel)
        if channel is None:
            channel = self._channels[delivery.channel] = _Channel(self._default, self._handlers)
        tries = 0
        if DEFER_META in delivery.message.meta:
            meta = delivery.message.meta
            tries = _tries(meta[DEFER_META])
            delivery.message = replace(delivery.message, meta={k: v for k, v in meta.items() if k != DEFER_META})
        slots = channel.slots
        if slots.free == 0 and self.transport is not None:
            if tries:  # back from a deferral: ahead of new deliveries, as long as its turn is near
                if slots.waiting_first >= channel.limit and not channel.return_is_near():
                    return await self._defer(delivery, channel, tries + 1)
                await slots.acquire_first()
            elif slots.waiting < channel.spare:
                await slots.acquire()
            elif not channel.turn_is_near():
                return await self._defer(delivery, channel, tries + 1)
            else:
                try:
                    async with asyncio.timeout(WAIT_IN_MEMORY):
                        await slots.acquire()
                except TimeoutError:  # the channel slowed down: stop holding the handler
                    return await self._defer(delivery, channel, tries + 1)
        else:
            await slots.acquire()
        started = time.monotonic()
        try:
            return await next(delivery)
        finally:
            slots.release()
            channel.sent(time.monotonic() - started)

    async def _defer(self, delivery: Delivery, channel: _Channel, tries: int) -> Outcome:
        assert self.transport is not None
        delay = channel.delay()
        record = RetryRecord(
            kind="delivery",
            event=delivery.event,
            rule=delivery.rule,
            # The record runs attempt ``attempt - 1 + 1``: waiting for a slot is not a failed attempt.
            attempt=delivery.attempt - 1,
            channel=delivery.channel,
            message=replace(delivery.message, meta={**delivery.message.meta, DEFER_META: tries}),
            last_error="waiting for the channel's concurrency limit",
        )
        await self.transport.schedule_retry(record.to_bytes(), delay=delay, headers=delivery_headers(delivery))
        if self.metrics is not None:
            self.metrics.channel_deferred.labels(delivery.channel).inc()
        return Outcome("skipped", f"deferred {delay:.3g}s: channel at its concurrency limit ({channel.limit})")


def _tries(value: object) -> int:
    """How many times a returning delivery was deferred (its meta is data from a record: checked)."""
    return value if isinstance(value, int) and 0 < value < 64 else 1
