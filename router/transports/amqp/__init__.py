"""The RabbitMQ transport (aio-pika): the production path.

Modules: :mod:`.transport` (``AmqpTransport``), :mod:`.connection` (the one way to open
RabbitMQ, shared with ``router.Publisher``), :mod:`.consumer` (raw deliveries),
:mod:`.acks` (coalesced acknowledgements), :mod:`.batch` (a batch of publishes in one write,
its confirms awaited together: ``POST /events``), :mod:`.wire` (headers, URLs, broker errors).

Topology, all durable, declared on connect (``Q`` is the configured queue):

- ``events`` (configurable): the topic exchange applications publish to;
- ``Q``: the router's queue, bound to the exchange with each binding key;
- ``Q.retry``: due retries, consumed next to ``Q``;
- ``Q.retry.<ms>``: delay queues, one per step of :mod:`router.transports.retry_ladder`, each
  with one queue-wide TTL that dead-letters expired records into ``Q.retry`` (declared on
  first use);
- ``Q.dead``: the dead-letter queue that ``router dlq`` reads.

Everything the router publishes is persistent and awaits the broker's publisher confirm, so
it is on the broker when the call returns. A publish that fails because the connection
dropped waits for the robust connection to come back and publishes again (bounded by
``publish_timeout``; one attempt waits ``confirm_timeout`` for its confirm): a lost confirm
can therefore duplicate a message, never lose one, which the engine's idempotency absorbs.

Consumption uses manual acknowledgements and reads aiormq's deliveries as they arrive (see
:class:`.consumer.DeliveryQueue`). Each message runs as its own task; the broker's
prefetch bounds how many each consumer holds and a semaphore bounds how many handlers run at
once across the event and retry consumers. When the connection drops, the handlers of the
lost deliveries finish but their acks go nowhere: the broker redelivers those messages (with
``redelivered`` set) on the restored connection.
"""

from router.transports.amqp.transport import H_DUE_AT, AmqpTransport, QueueType
from router.transports.amqp.wire import redact_url

__all__ = ["H_DUE_AT", "AmqpTransport", "QueueType", "redact_url"]
