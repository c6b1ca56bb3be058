"""Publishing a batch of messages to an exchange in one write, their confirms awaited together.

aiormq's ``basic_publish`` costs, per message, a task (when gathered), a timeout scope, the
channel lock held until that message's frames are written and drained, and a write of its
own; with aio-pika's ``Message`` and ``Exchange.publish`` on top, publishing was 8% of the
router's CPU on issue 18's workload and started most of its garbage collections
(bench/README.md, section 7). Here a batch takes the channel lock once, gets its delivery
tags and confirm futures from the channel exactly as ``basic_publish`` does, marshals every
message's frames into one ``ChannelFrame`` (one write, one drain), and then waits for the
confirms together.

It relies on what aiormq's own ``basic_publish`` does with a channel in confirm mode
(``lock``, ``delivery_tag``, ``confirmations``, ``create_future``, ``write_queue``,
``max_content_size``; aiormq 7.2): the broker numbers the publishes of a channel 1, 2, 3...
in the order their frames arrive, so tags are given and frames queued under the lock; a
confirm future is rejected by aiormq when the channel or connection closes, so a batch never
waits past a broker failure; and a ``Basic.Nack`` sets ``DeliveryError`` on its future.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiormq.abc import ChannelFrame
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message of a batch: its routing key, body and AMQP properties."""

    routing_key: str
    body: bytes
    properties: spec.Basic.Properties


async def send_batch(channel: Any, exchange: str, messages: Sequence[Outgoing]) -> list[asyncio.Future[Any]]:
    """Write ``messages`` to ``exchange`` on ``channel`` (an aiormq channel in confirm mode) in one
    frame; return each message's confirm future, in order (``Basic.Ack`` on success).

    Not mandatory: in a topic exchange, no queue bound to a key is a normal state of affairs.
    Raises if the channel is closed or closes before the frames are written; then nothing of
    the batch was handed to the broker and no future is left registered.
    """
    if not channel.publisher_confirms:
        raise RuntimeError("send_batch needs a channel in publisher-confirm mode")
    frames: list[Any] = []
    futures: list[asyncio.Future[Any]] = []
    async with channel.lock:
        first = channel.delivery_tag + 1
        queued = False
        # Unique message ids, as aiormq gives (a return names its message by it): one random
        # prefix per batch and the message's place in it, not a uuid4 (a system call) each.
        prefix = secrets.token_hex(12)
        try:
            for place, message in enumerate(messages):
                properties = message.properties
                if not properties.message_id:
                    properties.message_id = f"{prefix}{place:08x}"
                frames.append(spec.Basic.Publish(exchange=exchange, routing_key=message.routing_key))
                frames.append(ContentHeader(properties=properties, body_size=len(message.body)))
                frames.extend(_body_frames(message.body, channel.max_content_size))
                channel.delivery_tag += 1
                future = channel.create_future()
                channel.confirmations[channel.delivery_tag] = future
                futures.append(future)
            drained = channel.create_future()
            await channel.write_queue.put(
                ChannelFrame.marshall(channel_number=channel.number, frames=frames, drain_future=drained)
            )
            queued = True
            await drained
        except BaseException:
            if not queued:
                # The broker has seen none of it: give the tags back, as basic_publish does.
                for tag in range(first, channel.delivery_tag + 1):
                    channel.confirmations.pop(tag, None)
                channel.delivery_tag = first - 1
                for future in futures:
                    future.cancel()
            raise
    return futures


def _body_frames(body: bytes, max_size: int) -> list[ContentBody]:
    if not body:
        return []
    if len(body) < max_size:
        return [ContentBody(body)]
    return [ContentBody(body[start : start + max_size]) for start in range(0, len(body), max_size)]
