"""The transport interface: where events come from, where retries wait and dead letters go.

Two implementations pass one contract suite: ``amqp/`` (RabbitMQ via aio-pika, production)
and ``embedded.py`` (a SQLite-backed queue in the process, the default with no broker).

The engine sees only this interface. A transport hands it :class:`Incoming` messages and
the engine calls exactly one of ``ack()`` / ``requeue()`` on each once its work is resolved.
Everything the transport stores for the engine (retries, dead letters, published events)
must be durable when the awaited call returns (RabbitMQ: publisher confirms; SQLite: commit).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

MessageKind = Literal["event", "retry"]

# Header names the router writes on retries and dead letters (AMQP headers / SQLite columns).
H_KIND = "x-router-kind"  # "event" (an event) or "delivery"/"job" (a retry record)
H_REASON = "x-router-reason"  # why it was dead-lettered: permanent, exhausted, poison, oversize, render
H_ERROR = "x-router-error"  # the last error, secret-free
H_RULE = "x-router-rule"
H_CHANNEL = "x-router-channel"
H_ATTEMPTS = "x-router-attempts"
H_EVENT_ID = "x-router-event-id"
H_DEAD_AT = "x-router-dead-at"  # epoch seconds
H_ROUTING_KEY = "x-router-routing-key"  # the original routing key of a dead-lettered event
H_CONTENT_TYPE = "x-router-content-type"


@dataclass(slots=True)
class Incoming:
    """A message handed to the engine: a fresh event or a due retry.

    ``routing_key`` is the event's routing key (None for retries). ``redelivered`` is a hint,
    as in AMQP: True when the message may have been handed out before (requeued, or not
    acknowledged before a restart or a lost connection).

    ``ack`` removes the message for good; ``requeue`` puts it back to be delivered again.
    Both are set by the transport, never raise, and only the first call on a message counts:
    if the connection behind them is gone, the message is simply delivered again later.
    """

    kind: MessageKind
    body: bytes
    headers: dict[str, Any] = field(default_factory=dict)
    routing_key: str | None = None
    content_type: str | None = None
    redelivered: bool = False
    # The publisher's message id (AMQP ``message_id``; `router.Publisher` sets the event id), if any:
    # the id a message that cannot be decoded is recorded under in the activity.
    message_id: str | None = None
    # Set by the transport; the engine calls exactly one of them once the message is resolved.
    ack: Callable[[], Awaitable[None]] | None = None
    requeue: Callable[[], Awaitable[None]] | None = None


@dataclass(slots=True)
class DeadLetter:
    """A dead-lettered message, as `router dlq list` shows it."""

    id: str
    reason: str
    error: str
    body: bytes
    headers: dict[str, Any]
    rule: str | None = None
    channel: str | None = None
    attempts: int = 0
    event_id: str | None = None
    dead_at: float | None = None

    @classmethod
    def from_headers(cls, id: str, body: bytes, headers: dict[str, Any], *, dead_at: float | None = None) -> DeadLetter:
        """Build a letter from the ``x-router-*`` headers it was stored with.

        ``dead_at`` is the fallback when the headers carry no ``x-router-dead-at``.
        """
        return cls(
            id=id,
            reason=_text(headers.get(H_REASON)) or "unknown",
            error=_text(headers.get(H_ERROR)) or "",
            body=body,
            headers=headers,
            rule=_text(headers.get(H_RULE)),
            channel=_text(headers.get(H_CHANNEL)),
            attempts=int(_float(headers.get(H_ATTEMPTS)) or 0),
            event_id=_text(headers.get(H_EVENT_ID)),
            dead_at=_float(headers.get(H_DEAD_AT)) or dead_at,
        )


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        # Brokers may hand header strings back as bytes.
        return value.decode("utf-8", "replace")
    return str(value)


def _float(value: Any) -> float | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


Handler = Callable[[Incoming], Awaitable[None]]


class TransportError(Exception):
    """The broker or the queue file cannot be reached or refused an operation.

    The message is safe to show: it never contains a password or token.
    """


class Transport(ABC):
    """A source of events plus durable retry scheduling and a dead-letter queue."""

    name: str = "transport"

    @abstractmethod
    async def connect(self) -> None:
        """Open connections and declare what is needed (idempotent)."""

    @abstractmethod
    async def start(self, handler: Handler, *, prefetch: int) -> None:
        """Start consuming events and due retries; ``handler`` is awaited per message, up to
        ``prefetch`` at a time. Connects first if needed.

        Each message runs in its own task. A handler that raises has its message requeued
        (unless it already settled it) and the error logged; a handler that returns without
        settling keeps the message unacknowledged, holding one of the ``prefetch`` slots.
        """

    @abstractmethod
    async def stop_consuming(self) -> None:
        """Stop taking new messages; in-flight ones may still ack or requeue."""

    @abstractmethod
    async def close(self) -> None:
        """Close connections; unacknowledged messages return to the queue. Handlers still
        running are cancelled: call :meth:`stop_consuming` and let them finish first."""

    @property
    @abstractmethod
    def connected(self) -> bool:
        """True while the transport can receive and publish (for /readyz)."""

    @abstractmethod
    async def publish_event(
        self, body: bytes, *, routing_key: str, headers: dict[str, Any] | None = None, content_type: str | None = None
    ) -> None:
        """Publish an event for the router (and anyone else bound) to consume; durable on return."""

    async def publish_events(
        self, events: Sequence[tuple[bytes, str]], *, content_type: str | None = None
    ) -> list[BaseException | None]:
        """Publish ``(body, routing_key)`` pairs, started in order; per event, ``None`` once it is
        durable or the exception that kept it out (the others are not undone).

        By default each through :meth:`publish_event`, all at once (the embedded queue commits
        them together); RabbitMQ writes them in one frame and awaits the confirms together.
        """
        results = await asyncio.gather(
            *(self.publish_event(body, routing_key=key, content_type=content_type) for body, key in events),
            return_exceptions=True,
        )
        return [result if isinstance(result, BaseException) else None for result in results]

    @abstractmethod
    async def schedule_retry(self, record: bytes, *, delay: float, headers: dict[str, Any]) -> float:
        """Store a retry record that comes back as ``Incoming(kind="retry")`` after about ``delay``
        seconds (never earlier); durable on return. Returns the delay actually used (RabbitMQ
        rounds it up to a step of :mod:`router.transports.retry_ladder`).

        Header values should be str, int, bool or None: RabbitMQ hands floats back as their
        decimal text (AMQP would otherwise truncate them to 32 bits).
        """

    @abstractmethod
    async def dead_letter(self, body: bytes, *, headers: dict[str, Any]) -> str | None:
        """Store a message in the dead-letter queue; durable on return. Returns its id (as `router dlq list` shows it)."""

    @abstractmethod
    async def dlq_list(self, limit: int = 100) -> list[DeadLetter]:
        """The oldest dead letters, without removing them."""

    @abstractmethod
    async def dlq_replay(
        self, ids: Sequence[str] | None, republish: Callable[[DeadLetter], Awaitable[None]]
    ) -> list[DeadLetter]:
        """For each dead letter with an id in ``ids`` (all when None): await ``republish(letter)``,
        then remove it. Removal happens only after republish returned, so nothing is lost (a
        crash in between leaves a copy in the queue). Returns the replayed letters."""

    @abstractmethod
    async def dlq_purge(self) -> int:
        """Delete every dead letter; returns how many."""

    async def queue_depth(self) -> int | None:
        """Events waiting to be consumed, when the transport knows (for metrics)."""
        return None
