"""Bound the sends in flight per channel, so one slow channel cannot take every worker.

A channel at its limit does not hold the message's handler either: a delivery that finds every
slot taken is written as a durable retry record (as a throttled or paced one is) and resolved
at once, so its event is acknowledged and its prefetch slot goes to the next event. The record
takes a turn in a virtual queue (one send time, as recently measured, per ``limit`` deliveries)
and comes back then; it takes a free slot, or (back too early) waits again briefly, twice as long
each time. It keeps its attempt number: waiting is not a failed attempt. Without a transport (tests, tools) a full channel is waited
for in memory, as before.
"""

from __future__ import annotations

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
MAX_DELAY = 30.0
FIRST_ESTIMATE = 1.0  # seconds per send, until the channel's first send finished
_SMOOTHING = 0.5  # follows a channel that slows down within a few sends


class _Channel:
    """One channel's slots, how long its sends take, and the turns handed to deferred deliveries."""

    __slots__ = ("limit", "next_turn", "send_time", "slots")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.slots = Slots(limit)
        self.send_time = FIRST_ESTIMATE
        self.next_turn = 0.0  # monotonic time of the last turn handed out

    def delay(self, tries: int) -> float:
        """How long a delivery deferred for the ``tries``-th time waits.

        A first deferral takes the next turn in a virtual queue that advances by one send time
        per ``limit`` deliveries: the records come back at about the rate slots free up, so a
        freed slot is not left idle for long. One that came back too early (the estimate was
        short) keeps its place and tries again soon, twice as late each time.
        """
        step = self.send_time / self.limit
        if tries > 1:
            # At most one send time: by then every slot busy now has freed once.
            return min(MAX_DELAY, self.send_time, max(MIN_DELAY, step * 2.0 ** (tries - 1)))
        now = time.monotonic()
        self.next_turn = max(self.next_turn, now) + step
        return min(MAX_DELAY, max(MIN_DELAY, self.next_turn - now))


class ChannelConcurrency:
    """At most ``limits[channel]`` sends to a channel at once; other channels are unaffected."""

    def __init__(
        self,
        limits: Mapping[str, int],
        default: int = 8,
        *,
        transport: Transport | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._channels = {name: _Channel(limit) for name, limit in limits.items()}
        self._default = default
        self.transport = transport
        self.metrics = metrics

    async def __call__(self, delivery: Delivery, next: Next) -> Outcome:
        channel = self._channels.get(delivery.channel)
        if channel is None:
            channel = self._channels[delivery.channel] = _Channel(self._default)
        tries = 0
        if DEFER_META in delivery.message.meta:
            meta = delivery.message.meta
            tries = _tries(meta[DEFER_META])
            delivery.message = replace(delivery.message, meta={k: v for k, v in meta.items() if k != DEFER_META})
        if channel.slots.free == 0 and self.transport is not None:
            return await self._defer(delivery, channel, tries + 1)
        async with channel.slots:
            started = time.monotonic()
            try:
                return await next(delivery)
            finally:
                elapsed = time.monotonic() - started
                channel.send_time += _SMOOTHING * (elapsed - channel.send_time)

    async def _defer(self, delivery: Delivery, channel: _Channel, tries: int) -> Outcome:
        assert self.transport is not None
        delay = channel.delay(tries)
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
