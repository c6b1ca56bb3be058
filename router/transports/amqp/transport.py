"""``AmqpTransport``: topology, consuming, publishing with confirms, retries and the dead-letter queue."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustExchange,
    AbstractRobustQueue,
    DeliveryMode,
)
from aio_pika.robust_channel import RobustChannel
from aiormq import spec
from aiormq.abc import DeliveredMessage
from aiormq.exceptions import ChannelLockedResource, ChannelPreconditionFailed, DeliveryError, PublishError
from yarl import URL

from router.support.slots import Slots
from router.transports import retry_ladder
from router.transports.amqp import connection as connection_setup
from router.transports.amqp.acks import Acks, Settlement
from router.transports.amqp.batch import Outgoing, send_batch
from router.transports.amqp.consumer import Consumer, DeliveryQueue
from router.transports.amqp.wire import (
    BROKER_ERRORS,
    TRANSIENT_ERRORS,
    as_float,
    received_headers,
    redact_url,
    wire_headers,
)
from router.transports.base import (
    H_CONTENT_TYPE,
    H_DEAD_AT,
    DeadLetter,
    Handler,
    Incoming,
    MessageKind,
    Transport,
    TransportError,
)

log = logging.getLogger(__name__)

QueueType = Literal["classic", "quorum"]

# How long a dead-letter browse waits for another process's browse to finish, and how often it looks.
BROWSE_LOCK_WAIT = 60.0
BROWSE_LOCK_POLL = 0.1

H_DUE_AT = "x-router-due-at"
"""Epoch seconds a retry is due, set only on delays longer than the ladder's top step."""


class AmqpTransport(Transport):
    """Events from a RabbitMQ queue; retries in TTL delay queues; dead letters in ``<queue>.dead``."""

    name = "amqp"

    def __init__(
        self,
        url: str,
        *,
        exchange: str = "events",
        queue: str = "router",
        queue_type: QueueType = "classic",
        bindings: Sequence[str] = ("#",),
        reconnect_interval: float = 2.0,
        connect_timeout: float = 10.0,
        publish_timeout: float = 30.0,
        confirm_timeout: float = 5.0,
    ) -> None:
        if queue_type not in ("classic", "quorum"):
            raise ValueError(f"queue_type must be 'classic' or 'quorum', not {queue_type!r}")
        if not exchange or not queue:
            raise ValueError("the exchange and queue names cannot be empty")
        self._url = url
        self.exchange = exchange
        self.queue = queue
        self.queue_type: QueueType = queue_type
        self.bindings = tuple(bindings)
        self._reconnect_interval = reconnect_interval
        self._connect_timeout = connect_timeout
        self._publish_timeout = publish_timeout
        # One attempt's wait for its confirm. A publish caught by a reconnect can wait on a
        # channel that will never answer (aio-pika's robust channel hands out the old one): it
        # must be tried again on the restored channel, not wait out the whole publish_timeout.
        self._confirm_timeout = min(confirm_timeout, publish_timeout)
        try:
            self._password = URL(url).password or ""
        except (TypeError, ValueError):
            self._password = ""

        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None  # confirms; publishing and topology
        self._exchange: AbstractRobustExchange | None = None
        self._dead: AbstractRobustQueue | None = None
        self._delay_steps: set[int] = set()

        self._consume_channel: AbstractRobustChannel | None = None
        self._consumers: list[tuple[AbstractRobustQueue, str]] = []
        self._handler: Handler | None = None
        self._slots: Slots | None = None  # handlers running at once, events and retries
        self._retry_slots: Slots | None = None  # of which retries
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiting: set[Settlement] = set()
        self._acks: Acks | None = None
        self._dlq_lock: asyncio.Lock | None = None

    def __repr__(self) -> str:
        return f"AmqpTransport({redact_url(self._url)!r}, queue={self.queue!r})"

    @property
    def retry_queue(self) -> str:
        """Where due retries wait to be consumed."""
        return f"{self.queue}.retry"

    @property
    def dead_queue(self) -> str:
        """The dead-letter queue."""
        return f"{self.queue}.dead"

    def delay_queue(self, step_ms: int) -> str:
        """The name of the delay queue for one ladder step."""
        return f"{self.retry_queue}.{step_ms}"

    def _scrub(self, exc: BaseException) -> str:
        # Library errors may quote the URL; keep the password out of anything we show.
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if self._password:
            for secret in {self._password, quote(self._password, safe="")}:
                text = text.replace(secret, "***")
        return text

    @asynccontextmanager
    async def _broker_errors(self, doing: str) -> AsyncIterator[None]:
        try:
            yield
        except ChannelPreconditionFailed as exc:
            raise TransportError(
                f"RabbitMQ refused {doing}: {self._scrub(exc)}. An existing queue or exchange was declared "
                "with other settings (for example another x-queue-type): delete it or match broker.queue_type"
            ) from None
        except BROKER_ERRORS as exc:
            raise TransportError(f"RabbitMQ failed {doing}: {self._scrub(exc)}") from None

    # lifecycle

    async def connect(self) -> None:
        if self._connection is not None:
            return
        where = redact_url(self._url)
        try:
            connection = await connection_setup.open_connection(
                self._url,
                name=f"router ({self.queue})",
                timeout=self._connect_timeout,
                reconnect_interval=self._reconnect_interval,
            )
        except TRANSIENT_ERRORS as exc:
            raise TransportError(f"cannot connect to RabbitMQ at {where}: {self._scrub(exc)}") from None
        try:
            async with self._broker_errors("to declare the router's queues"):
                await self._declare(connection)
        except BaseException:
            self._channel = self._exchange = self._dead = None
            await connection.close()
            raise
        self._connection = connection
        self._dlq_lock = asyncio.Lock()
        log.info("connected to RabbitMQ at %s (queue %s, %s)", where, self.queue, self.queue_type)

    def _queue_arguments(self) -> dict[str, Any]:
        return {"x-queue-type": self.queue_type}

    async def _declare(self, connection: AbstractRobustConnection) -> None:
        channel = await connection_setup.open_confirmed_channel(connection)
        self._channel = channel
        self._exchange = await connection_setup.declare_events_exchange(channel, self.exchange)
        main = await channel.declare_queue(self.queue, durable=True, arguments=self._queue_arguments())
        for key in self.bindings:
            await main.bind(self._exchange, routing_key=key)
        await channel.declare_queue(self.retry_queue, durable=True, arguments=self._queue_arguments())
        self._dead = await channel.declare_queue(self.dead_queue, durable=True, arguments=self._queue_arguments())
        self._delay_steps.clear()

    async def start(self, handler: Handler, *, prefetch: int) -> None:
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        await self.connect()
        connection = self._require_connection()
        if self._consumers:
            raise RuntimeError("the transport is already consuming")
        self._handler = handler
        self._slots = Slots(prefetch)
        self._retry_slots = Slots(max(1, prefetch // 2))
        self._stopping = False
        async with self._broker_errors("to start consuming"):
            if self._consume_channel is None:
                channel: AbstractRobustChannel = await connection.channel(publisher_confirms=False)
                if not isinstance(channel, RobustChannel):
                    raise TypeError(f"expected aio-pika's RobustChannel, got {type(channel).__name__}")
                # Queues declared on this channel are DeliveryQueues (restored with it on reconnect).
                channel.QUEUE_CLASS = DeliveryQueue
                # Per consumer: the event and the retry consumer each hold at most `prefetch`.
                await channel.set_qos(prefetch_count=prefetch)
                self._consume_channel = channel
            kinds: tuple[tuple[str, MessageKind], ...] = ((self.queue, "event"), (self.retry_queue, "retry"))
            for name, kind in kinds:
                queue = await self._consume_channel.declare_queue(name, durable=True, arguments=self._queue_arguments())
                if not isinstance(queue, DeliveryQueue):
                    raise TypeError(f"expected a DeliveryQueue, got {type(queue).__name__}")
                tag = await queue.consume(self._callback(kind), no_ack=False)
                self._consumers.append((queue, tag))

    def _callback(self, kind: MessageKind) -> Consumer:
        async def on_message(message: DeliveredMessage) -> None:
            self._receive(kind, message)

        return on_message

    def _receive(self, kind: MessageKind, message: DeliveredMessage) -> None:
        acks = self._acks
        if acks is None or acks.channel is not message.channel:
            # First delivery, or the first on the channel a reconnect opened (tags restart at 1).
            acks = self._acks = Acks(message.channel)
        tag = message.delivery_tag or 0
        acks.received(tag)
        settlement = Settlement(message, tag, acks)
        # Our own task, not aiormq's: aiormq cancels its tasks when the channel closes, and a
        # handler cut off halfway through a delivery is worse than one whose ack goes nowhere.
        task = asyncio.create_task(self._dispatch(kind, settlement))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dispatch(self, kind: MessageKind, settlement: Settlement) -> None:
        if self._stopping or self._slots is None or self._handler is None or self._retry_slots is None:
            await settlement.requeue_now()
            return
        self._waiting.add(settlement)
        # Retries take at most half the handler slots: a failing channel's retry storm must not
        # leave new events (for healthy channels) waiting for a slot.
        share = self._retry_slots if kind == "retry" else contextlib.nullcontext()
        try:
            async with share, self._slots:
                self._waiting.discard(settlement)
                if settlement.settled:  # requeued by stop_consuming while it waited
                    return
                settlement.started = True
                try:
                    incoming = await self._incoming(kind, settlement)
                    if incoming is not None:
                        await self._handler(incoming)
                except Exception:
                    log.exception("handling a %s message failed; requeueing it", kind)
                    await settlement.requeue()
        finally:
            self._waiting.discard(settlement)

    async def _incoming(self, kind: MessageKind, settlement: Settlement) -> Incoming | None:
        message = settlement.message
        headers = received_headers(message.header.properties.headers, strip_deaths=kind == "retry")
        routing_key: str | None = message.routing_key
        if kind == "retry":
            routing_key = None
            due = as_float(headers.pop(H_DUE_AT, None))
            remaining = due - time.time() if due is not None else 0.0
            if remaining > 0.001:
                # Longer than the ladder: wait another round, then hand it over.
                await self.schedule_retry(message.body, delay=remaining, headers=headers)
                await settlement.ack()
                return None
        return Incoming(
            kind=kind,
            body=message.body,
            headers=headers,
            routing_key=routing_key,
            content_type=message.header.properties.content_type,
            redelivered=bool(message.redelivered),
            message_id=message.header.properties.message_id,
            ack=settlement.ack,
            requeue=settlement.requeue,
        )

    async def stop_consuming(self) -> None:
        self._stopping = True
        consumers, self._consumers = self._consumers, []
        for queue, tag in consumers:
            try:
                await queue.cancel(tag)
            except Exception as exc:  # the connection is gone: nothing is consuming anyway
                log.debug("cancelling consumer %s failed: %s", tag, type(exc).__name__)
        # Deliveries still waiting for a handler slot go back to the queue now.
        for settlement in list(self._waiting):
            if not settlement.started:
                await settlement.requeue_now()

    async def close(self) -> None:
        connection = self._connection
        if connection is None:
            return
        self._stopping = True
        self._consumers.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._acks is not None:
            await self._acks.drain()
            self._acks = None
        self._connection = None
        self._channel = self._consume_channel = None
        self._exchange = self._dead = None
        try:
            await connection.close()
        except Exception as exc:
            log.debug("closing the RabbitMQ connection failed: %s", type(exc).__name__)

    @property
    def connected(self) -> bool:
        connection, channel = self._connection, self._channel
        return (
            connection is not None
            and not connection.is_closed
            and connection.connected.is_set()
            and channel is not None
            and not channel.is_closed
        )

    def _require_connection(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise RuntimeError("the transport is not connected; call connect() first")
        return self._connection

    def _require_channel(self) -> AbstractRobustChannel:
        if self._channel is None:
            raise RuntimeError("the transport is not connected; call connect() first")
        return self._channel

    # publishing

    async def _publish(
        self,
        message: aio_pika.Message,
        *,
        routing_key: str,
        to_exchange: bool,
        what: str,
        on_unroutable: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Publish and wait for the confirm; ride out a reconnect until ``publish_timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._publish_timeout
        rerouted = False
        while True:
            channel = self._require_channel()
            target = self._exchange if to_exchange else channel.default_exchange
            assert target is not None
            try:
                # Our own timeout around the whole call: aio-pika applies its `timeout` only to
                # the confirm, not to the wait for a channel that precedes it.
                async with asyncio.timeout(self._attempt_timeout(deadline)):
                    await target.publish(message, routing_key, mandatory=not to_exchange)
                return
            except PublishError:
                # Returned unroutable: the target queue vanished (deleted by hand).
                if on_unroutable is not None and not rerouted:
                    rerouted = True
                    async with self._broker_errors(f"to re-declare the queue for {what}"):
                        await on_unroutable()
                    continue
                raise TransportError(f"RabbitMQ could not route {what}: no queue {routing_key!r}") from None
            except DeliveryError as exc:
                raise TransportError(f"RabbitMQ refused {what}: {self._scrub(exc)}") from None
            except asyncio.CancelledError as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                # aiormq cancels pending confirms when the channel dies under them.
                failure: BaseException = exc
            except TRANSIENT_ERRORS as exc:
                failure = exc
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TransportError(
                    f"{what} was not confirmed by RabbitMQ within {self._publish_timeout:g}s: {self._scrub(failure)}"
                )
            log.info("publishing %s failed (%s); retrying once RabbitMQ is back", what, type(failure).__name__)
            try:
                await asyncio.wait_for(channel.ready(), timeout=remaining)
            except TimeoutError:
                continue  # the loop raises, the deadline being past
            # A channel that reports ready yet fails again must not spin the loop.
            await asyncio.sleep(min(0.05, max(deadline - loop.time(), 0)))

    def _attempt_timeout(self, deadline: float) -> float:
        """How long one publish attempt may wait for its confirm: ``confirm_timeout``, within the deadline."""
        remaining = deadline - asyncio.get_running_loop().time()
        return max(min(remaining, self._confirm_timeout), 0.001)

    async def publish_event(
        self, body: bytes, *, routing_key: str, headers: dict[str, Any] | None = None, content_type: str | None = None
    ) -> None:
        message = aio_pika.Message(
            body,
            headers=wire_headers(headers),
            content_type=content_type,
            delivery_mode=DeliveryMode.PERSISTENT,
            timestamp=time.time(),
        )
        # Not mandatory: in a topic exchange, nobody bound to a key is a normal state of affairs.
        await self._publish(message, routing_key=routing_key, to_exchange=True, what="an event")

    async def publish_events(
        self, events: Sequence[tuple[bytes, str]], *, content_type: str | None = None
    ) -> list[BaseException | None]:
        """The batch in one write (:mod:`.batch`), its confirms awaited together; the events a
        broker failure left unconfirmed are published again once the channel is back, as
        :meth:`_publish` does for one, until ``publish_timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._publish_timeout
        results: list[BaseException | None] = [None] * len(events)
        todo = list(range(len(events)))
        while todo:
            channel = self._require_channel()
            exchange = self._exchange
            assert exchange is not None
            stamp = datetime.now(UTC)
            outgoing = [
                Outgoing(
                    events[i][1],
                    events[i][0],
                    spec.Basic.Properties(
                        content_type=content_type, headers={}, delivery_mode=DeliveryMode.PERSISTENT, timestamp=stamp
                    ),
                )
                for i in todo
            ]
            failed: dict[int, BaseException] = {}
            try:
                async with asyncio.timeout(self._attempt_timeout(deadline)):
                    underlay = await channel.get_underlay_channel()  # robust: waits for a reconnect
                    confirms = await send_batch(underlay, exchange.name, outgoing)
                    await asyncio.wait(confirms)
            except asyncio.CancelledError as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                failed = dict.fromkeys(todo, exc)  # aiormq cancels pending work when the channel dies
            except TRANSIENT_ERRORS as exc:
                failed = dict.fromkeys(todo, exc)
            except Exception as exc:  # not the broker's: each event fails with it, as publish_event would
                for i in todo:
                    results[i] = exc
                return results
            else:
                for i, confirm in zip(todo, confirms, strict=True):
                    error = asyncio.CancelledError() if confirm.cancelled() else confirm.exception()
                    if error is None:
                        continue  # confirmed
                    if isinstance(error, DeliveryError):  # a nack: refused, not retried
                        results[i] = TransportError(f"RabbitMQ refused an event: {self._scrub(error)}")
                    elif isinstance(error, (*TRANSIENT_ERRORS, asyncio.CancelledError)):
                        failed[i] = error
                    else:
                        results[i] = error
            if not failed:
                return results
            remaining = deadline - loop.time()
            if remaining <= 0:
                for i, failure in failed.items():
                    results[i] = TransportError(
                        f"an event was not confirmed by RabbitMQ within {self._publish_timeout:g}s: "
                        f"{self._scrub(failure)}"
                    )
                return results
            todo = sorted(failed)
            first = next(iter(failed.values()))
            log.info(
                "publishing %d events failed (%s); retrying once RabbitMQ is back", len(todo), type(first).__name__
            )
            try:
                await asyncio.wait_for(channel.ready(), timeout=remaining)
            except TimeoutError:
                continue  # the loop gives up, the deadline being past
            # A channel that reports ready yet fails again must not spin the loop.
            await asyncio.sleep(min(0.05, max(deadline - loop.time(), 0)))
        return results

    async def schedule_retry(self, record: bytes, *, delay: float, headers: dict[str, Any]) -> float:
        headers = dict(headers)
        headers.pop(H_DUE_AT, None)
        step: int | None = None
        used = 0.0
        if delay > 0:
            step = retry_ladder.step_for(delay)
            if step is None:  # beyond the top step: chain rounds of it until due
                step = retry_ladder.MAX_MS
                headers[H_DUE_AT] = time.time() + delay
                used = delay
            else:
                used = step / 1000
        message = aio_pika.Message(
            record,
            headers=wire_headers(headers),
            delivery_mode=DeliveryMode.PERSISTENT,
            message_id=uuid.uuid4().hex,
            timestamp=time.time(),
        )
        if step is None:
            await self._publish(message, routing_key=self.retry_queue, to_exchange=False, what="a retry")
            return used
        await self._ensure_delay_queue(step)
        chosen = step

        async def redeclare() -> None:
            self._delay_steps.discard(chosen)
            await self._ensure_delay_queue(chosen)

        await self._publish(
            message, routing_key=self.delay_queue(step), to_exchange=False, what="a retry", on_unroutable=redeclare
        )
        return used

    async def _ensure_delay_queue(self, step: int) -> None:
        if step in self._delay_steps:
            return
        arguments: dict[str, Any] = {
            **self._queue_arguments(),
            "x-message-ttl": step,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.retry_queue,
        }
        if self.queue_type == "quorum":
            # Quorum queues dead-letter at most once unless told otherwise; a retry must not vanish.
            arguments |= {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
        async with self._broker_errors(f"to declare the delay queue {self.delay_queue(step)!r}"):
            await self._require_channel().declare_queue(self.delay_queue(step), durable=True, arguments=arguments)
        self._delay_steps.add(step)

    # dead letters

    async def dead_letter(self, body: bytes, *, headers: dict[str, Any]) -> str | None:
        headers = dict(headers)
        headers.setdefault(H_DEAD_AT, round(time.time(), 3))
        content_type = headers.get(H_CONTENT_TYPE)
        message = aio_pika.Message(
            body,
            headers=wire_headers(headers),
            content_type=content_type if isinstance(content_type, str) else None,
            delivery_mode=DeliveryMode.PERSISTENT,
            message_id=uuid.uuid4().hex,
            timestamp=time.time(),
        )

        async def redeclare() -> None:
            await self._require_channel().declare_queue(
                self.dead_queue, durable=True, arguments=self._queue_arguments()
            )

        await self._publish(
            message, routing_key=self.dead_queue, to_exchange=False, what="a dead letter", on_unroutable=redeclare
        )
        return message.message_id

    @staticmethod
    def _letter(message: AbstractIncomingMessage) -> DeadLetter:
        headers = received_headers(message.headers, strip_deaths=True)
        # Letters put there by hand may lack a message id: derive a stable one from the content.
        letter_id = message.message_id or hashlib.sha256(message.body).hexdigest()[:32]
        dead_at = message.timestamp.timestamp() if message.timestamp else None
        return DeadLetter.from_headers(letter_id, message.body, headers, dead_at=dead_at)

    @property
    def browse_lock_queue(self) -> str:
        """The exclusive queue whose holder alone may browse the dead letters."""
        return f"{self.dead_queue}.browsing"

    @asynccontextmanager
    async def _browse(self) -> AsyncIterator[aio_pika.abc.AbstractQueue]:
        """The dead-letter queue on a private channel: whatever is left unacked when it closes
        goes back to the queue, in order.

        Browsing holds the letters it has read unacked, so a second browser (another `router dlq`
        command, the console of another router) would see them missing: browsers take turns,
        across processes, by declaring one exclusive queue (RabbitMQ deletes it if the holder's
        connection dies)."""
        connection = self._require_connection()
        assert self._dlq_lock is not None
        async with self._dlq_lock:
            lock_channel = await self._take_browse_lock(connection)
            channel: AbstractChannel | None = None
            try:
                channel = await connection.channel(publisher_confirms=False)
                yield await channel.declare_queue(self.dead_queue, passive=True)
            finally:
                if channel is not None:
                    await self._close_quietly(channel)
                # The queue is exclusive to this connection, which outlives the browse: delete it.
                with contextlib.suppress(Exception):
                    await lock_channel.queue_delete(self.browse_lock_queue)
                await self._close_quietly(lock_channel)

    @staticmethod
    async def _close_quietly(channel: AbstractChannel) -> None:
        try:
            await channel.close()
        except Exception as exc:
            log.debug("closing a dead-letter channel failed: %s", type(exc).__name__)

    async def _take_browse_lock(self, connection: AbstractRobustConnection) -> AbstractChannel:
        """Wait (``BROWSE_LOCK_WAIT`` at most) until no other process browses the dead letters."""
        deadline = time.monotonic() + BROWSE_LOCK_WAIT
        while True:
            channel: AbstractChannel = await connection.channel(publisher_confirms=False)
            try:
                await channel.declare_queue(self.browse_lock_queue, exclusive=True, auto_delete=True)
                return channel
            except ChannelLockedResource:
                # The broker closed that channel; close our side too, so it is not restored.
                await self._close_quietly(channel)
                if time.monotonic() >= deadline:
                    raise TransportError(
                        f"another process has been browsing the dead letters of {self.queue!r} for "
                        f"{BROWSE_LOCK_WAIT:g} s (a `router dlq` command or a console); try again"
                    ) from None
                await asyncio.sleep(BROWSE_LOCK_POLL)
            except BaseException:
                await self._close_quietly(channel)
                raise

    async def dlq_list(self, limit: int = 100) -> list[DeadLetter]:
        letters: list[DeadLetter] = []
        async with self._broker_errors("to list dead letters"), self._browse() as queue:
            while len(letters) < limit:
                message = await queue.get(no_ack=False, fail=False, timeout=10)
                if message is None:
                    break
                letters.append(self._letter(message))
        return letters

    async def dlq_replay(
        self, ids: Sequence[str] | None, republish: Callable[[DeadLetter], Awaitable[None]]
    ) -> list[DeadLetter]:
        wanted = None if ids is None else set(ids)
        replayed: list[DeadLetter] = []
        failure: BaseException | None = None
        async with self._broker_errors("to replay dead letters"), self._browse() as queue:
            result = queue.declaration_result
            # Only what is there now: a replayed letter that dies again must not loop forever.
            for _ in range(int(result.message_count or 0) if result else 0):
                if wanted is not None and len(wanted) == 0:
                    break
                message = await queue.get(no_ack=False, fail=False, timeout=10)
                if message is None:
                    break
                letter = self._letter(message)
                if wanted is not None and letter.id not in wanted:
                    continue  # stays unacked until the channel closes, then goes back
                try:
                    await republish(letter)
                except BaseException as exc:
                    # The caller's failure, not the broker's: re-raise it as is, once the
                    # channel is closed and the letter is back in the queue.
                    failure = exc
                    break
                await message.ack()
                replayed.append(letter)
                if wanted is not None:
                    wanted.discard(letter.id)
        if failure is not None:
            raise failure
        return replayed

    async def dlq_purge(self) -> int:
        self._require_channel()
        assert self._dead is not None
        async with self._broker_errors("to purge dead letters"):
            result = await self._dead.purge()
        return int(result.message_count or 0)

    async def delete_topology(self) -> None:
        """Delete the exchange and every queue of this router, messages included.

        For tests and for tearing a deployment down; the transport must be connected.
        """
        connection = self._require_connection()
        names = [self.queue, self.retry_queue, self.dead_queue, *map(self.delay_queue, retry_ladder.LADDER)]
        async with self._broker_errors("to delete the router's queues"):
            channel = await connection.channel(publisher_confirms=False)
            try:
                for name in names:
                    await channel.queue_delete(name)  # idempotent: a missing queue is fine
                await channel.exchange_delete(self.exchange)
            finally:
                await channel.close()
        self._delay_steps.clear()

    async def queue_depth(self) -> int | None:
        if not self.connected:
            return None
        try:
            channel = await self._require_channel().get_underlay_channel()
            result = await channel.queue_declare(self.queue, passive=True, timeout=5)
        except Exception as exc:
            log.debug("reading the queue depth failed: %s", type(exc).__name__)
            return None
        return int(result.message_count or 0)
