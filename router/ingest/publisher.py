"""`router.Publisher`: publish events to the router's RabbitMQ exchange from an application.

    async with Publisher("amqp://guest:guest@localhost/", source="planets-api") as pub:
        await pub.publish("planet.completed", PlanetCompleted(planet_id=7))

Each event goes out as a CloudEvents 1.0 structured-mode message (``application/cloudevents+json``,
the body :func:`router.core.events.encode` writes), persistent, with the event type as routing key
and the event id as AMQP ``message_id``. ``publish`` returns once RabbitMQ confirmed the
message. While the broker is unreachable it waits for the robust connection to come back and
publishes again, up to ``publish_timeout``; then it raises :class:`PublishError`. Each
attempt waits ``confirm_timeout`` (5 s) at most for its confirm before it goes again. Nothing is
dropped silently, but a confirm lost with the connection means the message may arrive twice:
the router is idempotent per event id, so pass ``id=`` when you re-publish the same event.

aio-pika (and asyncio) are imported on first use, so ``import router`` stays light.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlsplit

from pydantic import BaseModel

from router.core.events import CLOUDEVENTS_CONTENT_TYPE, DEFAULT_SOURCE, MAX_TYPE_LENGTH, Event, encode
from router.core.redact import redact_url, scrub

if TYPE_CHECKING:
    import asyncio

    from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection, AbstractRobustExchange

log = logging.getLogger("router.publisher")

# What the router's decoder accepts as a type: dotted, non-empty segments, no whitespace or
# binding-pattern characters (they would be read as wildcards by a topic exchange).
_TYPE_RE = re.compile(r"[^\s.*#\x00-\x1f\x7f]+(?:\.[^\s.*#\x00-\x1f\x7f]+)*")


class PublishError(Exception):
    """The event could not be published; the message says why (never with credentials)."""


def make_event(
    event_type: str,
    data: BaseModel | Mapping[str, Any] | None = None,
    *,
    source: str = DEFAULT_SOURCE,
    id: str | None = None,
    subject: str | None = None,
    time: datetime | None = None,
) -> Event:
    """The :class:`Event` ``publish`` sends: a pydantic model becomes ``model_dump(mode="json")``.

    Raises ValueError for a type the router would refuse or an empty id or source.
    """
    if len(event_type.encode()) > MAX_TYPE_LENGTH or not _TYPE_RE.fullmatch(event_type):
        raise ValueError(f"invalid event type {event_type!r}: use dotted names like planet.completed")
    if id is not None and not id:
        raise ValueError("the event id cannot be empty")
    if not source:
        raise ValueError("the event source cannot be empty")
    if isinstance(data, BaseModel):
        payload: dict[str, Any] = data.model_dump(mode="json")
    elif data is None:
        payload = {}
    elif isinstance(data, Mapping):
        payload = dict(data)
    else:
        raise TypeError(f"event data must be a pydantic model or a mapping, not {type(data).__name__}")
    when = time or datetime.now(UTC)
    if when.tzinfo is None:
        raise ValueError("the event time must be timezone-aware")
    return Event(
        type=event_type,
        id=id or uuid.uuid4().hex,
        source=source,
        time=when.astimezone(UTC),
        data=payload,
        subject=subject,
    )


class Publisher:
    """An async client that publishes events to the router's exchange with publisher confirms.

    ``exchange`` is declared as the router declares it (durable topic), so an application
    started before the router does not fail. ``mandatory=True`` makes a publish that no queue
    is bound for raise :class:`PublishError` instead of being dropped by the exchange.
    """

    def __init__(
        self,
        url: str,
        *,
        exchange: str = "events",
        source: str = DEFAULT_SOURCE,
        mandatory: bool = False,
        publish_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        reconnect_interval: float = 1.0,
        confirm_timeout: float = 5.0,
    ) -> None:
        if not url.startswith(("amqp://", "amqps://")):
            raise ValueError("the broker URL must start with amqp:// or amqps://")
        if not exchange:
            raise ValueError("the exchange name cannot be empty")
        self._url = url
        self.exchange_name = exchange
        self.source = source
        self.mandatory = mandatory
        self.publish_timeout = publish_timeout
        # One attempt's wait: a publish caught by a reconnect may wait on a channel that never
        # confirms; it is tried again on the restored one instead of waiting out publish_timeout.
        self.confirm_timeout = min(confirm_timeout, publish_timeout)
        self.connect_timeout = connect_timeout
        self.reconnect_interval = reconnect_interval
        try:
            self._password = urlsplit(url).password or ""
        except ValueError:
            self._password = ""
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._exchange: AbstractRobustExchange | None = None
        self._lock: asyncio.Lock | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"Publisher({redact_url(self._url)!r}, exchange={self.exchange_name!r})"

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        """True while the connection to RabbitMQ is up."""
        connection = self._connection
        return connection is not None and not connection.is_closed and connection.connected.is_set()

    def _guard(self) -> asyncio.Lock:
        if self._lock is None:
            import asyncio

            self._lock = asyncio.Lock()
        return self._lock

    def _scrub(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return scrub(text, [self._password] if self._password else [])

    async def connect(self) -> None:
        """Connect and declare the exchange (idempotent). Raises :class:`PublishError`."""
        async with self._guard():
            if self._closed:
                raise PublishError("the publisher is closed")
            if self._connection is not None:
                return
            # aio-pika loads only when publishing over AMQP
            from router.transports.amqp import connection as amqp_connection

            where = redact_url(self._url)
            try:
                connection = await amqp_connection.open_connection(
                    self._url,
                    name=f"router publisher ({self.source})",
                    timeout=self.connect_timeout,
                    reconnect_interval=self.reconnect_interval,
                )
            except Exception as exc:
                raise PublishError(f"cannot connect to RabbitMQ at {where}: {self._scrub(exc)}") from None
            try:
                channel = await amqp_connection.open_confirmed_channel(connection)
                exchange = await amqp_connection.declare_events_exchange(channel, self.exchange_name)
            except Exception as exc:
                await connection.close()
                raise PublishError(
                    f"RabbitMQ at {where} refused the exchange {self.exchange_name!r}: {self._scrub(exc)}"
                ) from None
            self._connection, self._channel, self._exchange = connection, channel, exchange

    async def close(self) -> None:
        """Close the connection; later publishes raise :class:`PublishError`. Idempotent."""
        async with self._guard():
            self._closed = True
            connection, self._connection = self._connection, None
            self._channel = self._exchange = None
        if connection is not None:
            try:
                await connection.close()
            except Exception as exc:  # closing a connection that is already gone
                log.debug("closing the RabbitMQ connection failed: %s", type(exc).__name__)

    async def publish(
        self,
        event_type: str,
        data: BaseModel | Mapping[str, Any] | None = None,
        *,
        id: str | None = None,
        subject: str | None = None,
        source: str | None = None,
        time: datetime | None = None,
    ) -> str:
        """Publish one event and return its id once RabbitMQ has confirmed it.

        ``id`` defaults to a new UUID; pass the same id to re-publish the same event
        idempotently. Raises :class:`PublishError` when the broker does not confirm the message
        within ``publish_timeout`` (or refuses it), ValueError/TypeError for invalid input.
        After a timeout the broker may still have the message (the confirm is what was lost):
        re-publishing with the same ``id`` is the safe way to retry.
        """
        event = make_event(event_type, data, source=source or self.source, id=id, subject=subject, time=time)
        body = encode(event)  # ValueError for data JSON cannot carry, before anything is sent
        await self.publish_encoded(event, body)
        return event.id

    async def publish_encoded(self, event: Event, body: bytes) -> None:
        """Publish ``body`` (``encode(event)``) with the routing key ``event.type``; see :meth:`publish`."""
        import asyncio

        import aio_pika
        from aio_pika.abc import DeliveryMode
        from aiormq.exceptions import DeliveryError
        from aiormq.exceptions import PublishError as Returned

        if self._connection is None:
            await self.connect()
        message = aio_pika.Message(
            body,
            content_type=CLOUDEVENTS_CONTENT_TYPE,
            delivery_mode=DeliveryMode.PERSISTENT,
            message_id=event.id,
            timestamp=event.time,
            type=event.type,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.publish_timeout
        failure: BaseException | None = None
        while True:
            channel, exchange = self._channel, self._exchange
            if self._closed or channel is None or exchange is None:
                raise PublishError(f"event {event.id} not published: the publisher is closed")
            remaining = deadline - loop.time()
            if remaining <= 0:
                reason = self._scrub(failure) if failure is not None else "no connection"
                raise PublishError(
                    f"event {event.id} ({event.type}) was not confirmed by RabbitMQ within "
                    f"{self.publish_timeout:g}s: {reason}"
                )
            try:
                # The bound covers waiting for a reconnect too: publishing on a robust channel
                # waits for its connection without a limit of its own.
                async with asyncio.timeout(min(remaining, self.confirm_timeout)):
                    await channel.ready()
                    await exchange.publish(message, event.type, mandatory=self.mandatory)
                return
            except Returned:
                raise PublishError(
                    f"event {event.id} was returned unroutable: no queue is bound to exchange "
                    f"{self.exchange_name!r} for routing key {event.type!r}"
                ) from None
            except DeliveryError as exc:
                raise PublishError(f"RabbitMQ refused event {event.id}: {self._scrub(exc)}") from None
            except asyncio.CancelledError as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                failure = exc  # aiormq cancels the pending confirms of a channel that died
            except Exception as exc:  # connection lost, channel closed, timeout: wait and retry
                failure = exc
            log.info(
                "publishing event %s failed (%s); retrying once RabbitMQ is back", event.id, type(failure).__name__
            )
            # A channel that reports ready yet fails again must not spin the loop.
            await asyncio.sleep(min(0.1, max(deadline - loop.time(), 0)))
