"""Coalesced AMQP acks never settle a delivery tag twice (found by the fault tests: RabbitMQ closed
the channel on "unknown delivery tag", then the connection, and every unacked event came back)."""

from __future__ import annotations

import asyncio

from router.transports.amqp.acks import Acks, Settlement


class Broker:
    """A channel that checks acks the way RabbitMQ does. A frame reaches the broker when it is
    issued; the call then waits for the connection to drain (held while ``draining`` is clear)."""

    def __init__(self, tags: int) -> None:
        self.outstanding = set(range(1, tags + 1))
        self.errors: list[int] = []
        self.draining = asyncio.Event()
        self.draining.set()

    async def basic_ack(self, tag: int, multiple: bool = False, wait: bool = True) -> None:
        if tag not in self.outstanding:
            self.errors.append(tag)  # PRECONDITION_FAILED - unknown delivery tag
        elif multiple:
            self.outstanding -= {t for t in self.outstanding if t <= tag}
        else:
            self.outstanding.discard(tag)
        await self.draining.wait()

    async def basic_nack(self, tag: int, requeue: bool = True) -> None:
        # The nack reaches the broker only a few passes of the loop later.
        for _ in range(3):
            await asyncio.sleep(0)
        if tag not in self.outstanding:
            self.errors.append(tag)
        self.outstanding.discard(tag)


async def test_acks_made_while_a_flush_is_writing_never_ack_a_tag_twice() -> None:
    broker = Broker(6)
    acks = Acks(broker)
    for tag in range(1, 7):
        acks.received(tag)
    broker.draining.clear()  # a busy connection: each write waits
    acks.ack(3)
    acks.ack(4)  # 1 and 2 still unsettled: 3 and 4 go out one by one
    while 3 in broker.outstanding:  # the flush issued the ack of 3 and waits on the write
        await asyncio.sleep(0)
    for tag in (1, 2, 5, 6):  # everything is settled now: a multiple ack up to 6 is possible
        acks.ack(tag)
    for _ in range(5):
        await asyncio.sleep(0)
    broker.draining.set()
    await acks.drain()
    for _ in range(5):  # any other flush still writing finishes too
        await asyncio.sleep(0)
    assert broker.errors == [], f"acked twice (RabbitMQ would close the channel): {broker.errors}"
    assert broker.outstanding == set()


class Delivered:
    """A delivery as aiormq hands it over: settled through its channel."""

    def __init__(self, broker: Broker) -> None:
        self.channel = broker


async def test_acks_made_while_a_requeue_is_on_its_way_do_not_span_it() -> None:
    broker = Broker(3)
    acks = Acks(broker)
    for tag in (1, 2, 3):
        acks.received(tag)
    requeue = asyncio.create_task(Settlement(Delivered(broker), 1, acks).requeue())  # type: ignore[arg-type]
    await asyncio.sleep(0)  # the requeue of 1 has started, its nack not yet written
    acks.ack(2)
    acks.ack(3)
    await acks.drain()
    await requeue
    assert broker.errors == [], "a multiple ack settled the message being requeued (it would be lost)"
    assert broker.outstanding == set()


async def test_requeues_back_off_while_nothing_is_acked_and_reset_on_an_ack() -> None:
    acks = Acks(Broker(1))
    pauses = [acks.requeue_pause() for _ in range(8)]
    assert pauses[0] == 0.0
    assert pauses[1:] == sorted(pauses[1:]) and pauses[-1] == 1.0
    acks.received(1)
    acks.ack(1)
    await acks.drain()
    assert acks.requeue_pause() == 0.0
