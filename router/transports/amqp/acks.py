"""Settling deliveries: acknowledgements coalesced per pass of the event loop, requeues paced."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiormq.abc import DeliveredMessage

log = logging.getLogger(__name__)

REQUEUE_PAUSE_MIN = 0.05
REQUEUE_PAUSE_MAX = 1.0


class Acks:
    """The acknowledgements of one AMQP channel, coalesced into ``basic.ack(multiple=True)``.

    Acknowledging one message at a time costs a frame, a socket write and a wait for the
    write to drain: with aio-pika, about a third of what a bare consumer spends per message
    (bench/README.md). Here the acks made during one pass of the event loop go out together
    once that pass is over: one multiple ack for the highest acked delivery tag below every
    tag still unsettled, and single acks for those above one. No ack waits longer than the
    current pass, and a multiple ack never covers a message that is not settled: delivery tags
    on a channel run 1, 2, 3..., each is recorded as unsettled when it arrives, and if a tag
    has not been seen (``seen != highest``) every ack goes out alone. A requeued tag counts as
    unsettled until its nack is written, so no multiple ack spans it before; flushes run one
    at a time.
    """

    __slots__ = ("acked", "channel", "flusher", "highest", "requeues", "seen", "unsettled")

    def __init__(self, channel: Any) -> None:
        self.channel = channel  # the aiormq channel the deliveries arrived on
        self.unsettled: set[int] = set()
        self.seen = 0
        self.highest = 0
        self.acked: list[int] = []
        self.flusher: asyncio.Future[None] | None = None
        self.requeues = 0  # requeues since the last ack: the state store or the broker is failing

    def requeue_pause(self) -> float:
        """Seconds to hold a message before requeueing it: 0 at first, growing while nothing is acked.

        Without it, a state-store outage turns into a loop of immediate redeliveries (hundreds a
        second, each with an error line); held messages keep their prefetch slots, so consuming
        slows down to what the pause lets through until something succeeds again.
        """
        self.requeues += 1
        if self.requeues <= 1:
            return 0.0
        return float(min(REQUEUE_PAUSE_MAX, REQUEUE_PAUSE_MIN * 2.0 ** (self.requeues - 2)))

    def received(self, tag: int) -> None:
        self.unsettled.add(tag)
        self.seen += 1
        self.highest = max(self.highest, tag)

    def requeued(self, tag: int) -> None:
        self.unsettled.discard(tag)

    def ack(self, tag: int) -> None:
        self.requeues = 0
        self.unsettled.discard(tag)
        self.acked.append(tag)
        if self.flusher is None:
            # A task's first step runs after the callbacks already queued: the rest of this pass.
            self.flusher = asyncio.ensure_future(self._flush())

    async def _flush(self) -> None:
        # One flush at a time, taking up the acks made while it was writing: were a second flush
        # to run while the first awaits its writes, its multiple ack could settle a tag the first
        # is about to ack alone, and RabbitMQ closes the channel on an unknown delivery tag
        # (then the connection, at the next ack on the closed channel): every unacked message
        # would be redelivered.
        try:
            while self.acked:
                tags, self.acked = self.acked, []
                await self._send(tags)
        finally:
            self.flusher = None

    async def _send(self, tags: list[int]) -> None:
        multiple = 0
        if self.seen == self.highest:  # every tag up to `highest` was recorded: `unsettled` is complete
            floor = min(self.unsettled, default=self.highest + 1)
            below = [tag for tag in tags if tag < floor]
            if len(below) > 1:
                multiple = max(below)
                tags = [tag for tag in tags if tag > floor]
        try:
            # wait=False: queue the frame for the connection's writer, without waiting on a drain.
            if multiple:
                await self.channel.basic_ack(multiple, multiple=True, wait=False)
            for tag in tags:
                await self.channel.basic_ack(tag, wait=False)
        except Exception as exc:
            log.debug("ack not delivered (%s); RabbitMQ will redeliver the messages", type(exc).__name__)

    async def drain(self) -> None:
        """Send the acks still waiting for the end of the current pass."""
        if self.flusher is not None:
            await asyncio.gather(self.flusher, return_exceptions=True)


class Settlement:
    """The ack/requeue closures of one delivery: first call wins, failures are not errors."""

    __slots__ = ("acks", "message", "settled", "started", "tag")

    def __init__(self, message: DeliveredMessage, tag: int, acks: Acks) -> None:
        self.message = message
        self.tag = tag
        self.acks = acks
        self.settled = False
        self.started = False

    async def ack(self) -> None:
        if self.settled:
            return
        self.settled = True
        self.acks.ack(self.tag)

    async def requeue(self) -> None:
        """Requeue after a failed handling: held back a while when failures repeat (see ``requeue_pause``)."""
        await self._requeue(paused=True)

    async def requeue_now(self) -> None:
        """Requeue at once (stopping: the message was never handled)."""
        await self._requeue(paused=False)

    async def _requeue(self, *, paused: bool) -> None:
        if self.settled:
            return
        self.settled = True
        pause = self.acks.requeue_pause() if paused else 0.0
        # The tag stays unsettled until its nack is written (and through any pause), so no
        # multiple ack can span it first: acking a requeued message would lose it.
        if pause:
            await asyncio.sleep(pause)
        try:
            await self.message.channel.basic_nack(self.tag, requeue=True)
        except Exception as exc:
            log.debug("requeue not delivered (%s); RabbitMQ will redeliver the message", type(exc).__name__)
        finally:
            self.acks.requeued(self.tag)
