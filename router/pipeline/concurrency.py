"""Bound the sends in flight per channel, so one slow channel cannot take every worker.

A channel at its limit does not hold the message's handler either: a delivery that finds every
slot taken is written as a durable retry record (as a throttled or paced one is) and resolved
at once, so its event is acknowledged and its prefetch slot goes to the next event. The record
comes back after about the time the deliveries ahead of it need (the channel's recent send time
x deliveries waiting / limit), takes a free slot or waits again, and keeps its attempt number:
waiting is not a failed attempt. Without a transport (tests, tools) a full channel is waited
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
_SMOOTHING = 0.2


class _Channel:
    """One channel's slots, how long its sends take, and how many deliveries wait as records."""

    __slots__ = ("limit", "send_time", "slots", "waiting")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.slots = Slots(limit)
        self.send_time = FIRST_ESTIMATE
        self.waiting = 0  # deferred by this process and not back yet

    def delay(self) -> float:
        """When the next deferred delivery may find a slot: the deliveries ahead, ``limit`` at a time."""
        return min(MAX_DELAY, max(MIN_DELAY, self.send_time * (self.waiting + 1) / self.limit))


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
        if DEFER_META in delivery.message.meta:
            meta = delivery.message.meta
            delivery.message = replace(delivery.message, meta={k: v for k, v in meta.items() if k != DEFER_META})
            channel.waiting = max(0, channel.waiting - 1)
        if channel.slots.free == 0 and self.transport is not None:
            return await self._defer(delivery, channel)
        async with channel.slots:
            started = time.monotonic()
            try:
                return await next(delivery)
            finally:
                elapsed = time.monotonic() - started
                channel.send_time += _SMOOTHING * (elapsed - channel.send_time)

    async def _defer(self, delivery: Delivery, channel: _Channel) -> Outcome:
        assert self.transport is not None
        delay = channel.delay()
        record = RetryRecord(
            kind="delivery",
            event=delivery.event,
            rule=delivery.rule,
            # The record runs attempt ``attempt - 1 + 1``: waiting for a slot is not a failed attempt.
            attempt=delivery.attempt - 1,
            channel=delivery.channel,
            message=replace(delivery.message, meta={**delivery.message.meta, DEFER_META: 1}),
            last_error="waiting for the channel's concurrency limit",
        )
        await self.transport.schedule_retry(record.to_bytes(), delay=delay, headers=delivery_headers(delivery))
        channel.waiting += 1
        if self.metrics is not None:
            self.metrics.channel_deferred.labels(delivery.channel).inc()
        return Outcome("skipped", f"deferred {delay:.3g}s: channel at its concurrency limit ({channel.limit})")
