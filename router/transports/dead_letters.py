"""Every dead letter the router writes, built in one place: its body, its headers, its metric.

The body is what a replay needs (the message as it came, the event, or a retry record); the
headers say why (``x-router-reason``), what failed last (``x-router-error``, secret-free) and
for which event, rule and channel, so that ``router dlq list`` can show it without decoding the
body. Callers (the engine, the ``Resolve`` stage, the digest flusher) decide *when* something is
dead; this module decides *what* is written.
"""

from __future__ import annotations

import dataclasses

from router.core.delivery import Delivery
from router.core.events import Event, encode
from router.core.records import RetryRecord
from router.core.redact import registered_secrets, scrub
from router.support.metrics import Metrics
from router.transports.base import (
    H_ATTEMPTS,
    H_CHANNEL,
    H_CONTENT_TYPE,
    H_ERROR,
    H_EVENT_ID,
    H_KIND,
    H_REASON,
    H_ROUTING_KEY,
    H_RULE,
    Incoming,
    Transport,
)

Headers = dict[str, object]


def clean_error(error: str) -> str:
    """``error`` as a dead letter keeps it: registered secrets (channels' secret options, a
    plugin's included) masked and URLs cut to scheme and host, as failure notifications show it."""
    return scrub(error, registered_secrets()) if error else error


def delivery_headers(delivery: Delivery) -> Headers:
    """The headers that name one delivery (also on its retry records)."""
    return {
        H_KIND: "delivery",
        H_EVENT_ID: delivery.event.id,
        H_RULE: delivery.rule,
        H_CHANNEL: delivery.channel,
        H_ATTEMPTS: delivery.attempt,
    }


def delivery_record(delivery: Delivery, error: str = "") -> RetryRecord:
    """The record that lets a delivery be sent again (from a retry or from ``router dlq replay``)."""
    return RetryRecord(
        kind="delivery",
        event=delivery.event,
        rule=delivery.rule,
        attempt=delivery.attempt,
        channel=delivery.channel,
        message=delivery.message,
        last_error=error,
    )


class DeadLetters:
    """Writes dead letters to a transport and counts them (``router_dead_letters_total{reason}``).

    Each method raises what the transport raises: the caller decides whether that means a requeue.
    """

    def __init__(self, transport: Transport, metrics: Metrics) -> None:
        self.transport = transport
        self.metrics = metrics

    async def message(self, incoming: Incoming, reason: str, error: str, *, event: Event | None = None) -> str | None:
        """A message as it came: undecodable, oversize, or decoded but refused (``event``: schema).

        Returns the dead letter's id, when the transport gives one (the activity records it)."""
        error = clean_error(error)
        headers: Headers = {
            **{k: v for k, v in incoming.headers.items() if not str(k).startswith("x-router-")},
            H_KIND: "event" if incoming.kind == "event" else "retry",
            H_REASON: reason,
            H_ERROR: error,
            H_ROUTING_KEY: incoming.routing_key or "",
            H_CONTENT_TYPE: incoming.content_type or "",
            H_ATTEMPTS: 1,  # handled once and refused: what its failure notification says too
        }
        if event is not None:  # `router dlq list` shows which event
            headers[H_EVENT_ID] = event.id
        letter_id = await self.transport.dead_letter(incoming.body, headers=headers)
        self.metrics.events_failed.labels(reason).inc()
        self.metrics.dead_letters.labels(reason).inc()
        return letter_id

    async def event(self, event: Event, rule: str, reason: str, error: str, attempt: int) -> None:
        """A rule that failed on an event (its template or a key did not render): the event, for a replay."""
        error = clean_error(error)
        headers: Headers = {
            **self._rule_headers("event", event, rule, reason, error, attempt),
            H_ROUTING_KEY: event.routing_key or event.type,
            H_CONTENT_TYPE: "application/cloudevents+json",
        }
        await self.transport.dead_letter(encode(event), headers=headers)
        self.metrics.dead_letters.labels(reason).inc()

    async def record(self, record: RetryRecord, reason: str, error: str) -> None:
        """A job or digest that failed for good, or a record whose rule or channel is gone: the record itself."""
        error = clean_error(error)
        if record.last_error:
            record = dataclasses.replace(record, last_error=clean_error(record.last_error))
        if record.kind == "delivery" and record.message is not None and record.channel is not None:
            delivery = Delivery(record.event, record.rule, record.channel, "", record.message, record.attempt)
            await self.delivery(delivery, reason, error)
            return
        headers = self._rule_headers(record.kind, record.event, record.rule, reason, error, record.attempt)
        if record.kind == "job":  # replayed as a job, so the routing headers of an event go with it
            headers[H_ROUTING_KEY] = record.event.routing_key or record.event.type
            headers[H_CONTENT_TYPE] = "application/cloudevents+json"
        await self.transport.dead_letter(record.to_bytes(), headers=headers)
        self.metrics.dead_letters.labels(reason).inc()

    async def delivery(self, delivery: Delivery, reason: str, error: str) -> str | None:
        """One delivery that failed for good, with its record (so ``router dlq replay`` can send it again).

        Returns the dead letter's id, when the transport gives one (the activity records it)."""
        error = clean_error(error)
        headers = {**delivery_headers(delivery), H_REASON: reason, H_ERROR: error}
        letter_id = await self.transport.dead_letter(delivery_record(delivery, error).to_bytes(), headers=headers)
        self.metrics.dead_letters.labels(reason).inc()
        return letter_id

    async def digest_item(self, raw: bytes, error: str) -> None:
        """A digest or fold item that cannot be read: kept for a person to see, never delivered."""
        error = clean_error(error)
        await self.transport.dead_letter(raw, headers={H_KIND: "digest-item", H_REASON: "poison", H_ERROR: error})
        self.metrics.dead_letters.labels("poison").inc()

    @staticmethod
    def _rule_headers(kind: str, event: Event, rule: str, reason: str, error: str, attempt: int) -> Headers:
        return {
            H_KIND: kind,
            H_REASON: reason,
            H_ERROR: error,
            H_EVENT_ID: event.id,
            H_RULE: rule,
            H_ATTEMPTS: attempt,
        }
