"""Transports: where events come from, where retries wait and dead letters go.

:func:`open_transport` picks the implementation from the broker section of rules.yaml:
RabbitMQ for an ``amqp://`` or ``amqps://`` URL, the embedded SQLite queue otherwise.
"""

from __future__ import annotations

from router.config.models import BrokerConfig
from router.transports.base import DeadLetter, Handler, Incoming, Transport, TransportError

__all__ = ["DeadLetter", "Handler", "Incoming", "Transport", "TransportError", "open_transport"]


def open_transport(broker: BrokerConfig) -> Transport:
    """The transport ``broker`` describes, not yet connected: await ``connect()`` next."""
    if broker.url.startswith(("amqp://", "amqps://")):
        # Imported here so that the embedded path does not pay for aio-pika's import.
        from router.transports.amqp import AmqpTransport

        return AmqpTransport(
            broker.url,
            exchange=broker.exchange,
            queue=broker.queue,
            queue_type=broker.queue_type,
            bindings=broker.bindings,
        )
    if broker.url.strip():
        raise ValueError("broker.url must be an amqp:// or amqps:// URL, or empty for the embedded queue")
    from router.transports.embedded import EmbeddedTransport

    return EmbeddedTransport(broker.embedded_path)
