"""The one way the router opens RabbitMQ: a robust connection, a confirmed channel, the events exchange.

Used by the AMQP transport (consuming, retries, dead letters) and by ``router.Publisher``
(applications and ``router publish``), so both name their connections, confirm their
publishes and declare the exchange identically.
"""

from __future__ import annotations

import aio_pika
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection, AbstractRobustExchange, ExchangeType


async def open_connection(
    url: str, *, name: str, timeout: float, reconnect_interval: float
) -> AbstractRobustConnection:
    """A connection that reconnects by itself; ``name`` is what the management UI shows."""
    return await aio_pika.connect_robust(
        url,
        timeout=timeout,
        reconnect_interval=reconnect_interval,
        client_properties={"connection_name": name},
    )


async def open_confirmed_channel(connection: AbstractRobustConnection) -> AbstractRobustChannel:
    """A channel with publisher confirms; a mandatory publish nobody can route raises instead of vanishing."""
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    assert isinstance(channel, AbstractRobustChannel)  # a robust connection's channels are robust
    return channel


async def declare_events_exchange(channel: AbstractRobustChannel, name: str) -> AbstractRobustExchange:
    """The durable topic exchange events are published to (routing key: the event type)."""
    exchange = await channel.declare_exchange(name, ExchangeType.TOPIC, durable=True)
    assert isinstance(exchange, AbstractRobustExchange)  # a robust channel's exchanges are robust
    return exchange
