"""Resolve each outcome durably: record what was sent, schedule retries, dead-letter the rest.

This stage is what lets the engine acknowledge an event: when it returns, the delivery is
sent and recorded, durably scheduled for retry, or in the dead-letter queue.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from router.channels.base import Outcome
from router.config.models import RetryPolicy
from router.delivery import Delivery
from router.metrics import Metrics
from router.pipeline.backoff import retry_delay
from router.pipeline.chain import Next
from router.records import RetryRecord
from router.state.base import StateStore
from router.transports.base import (
    H_ATTEMPTS,
    H_CHANNEL,
    H_ERROR,
    H_EVENT_ID,
    H_KIND,
    H_REASON,
    H_RULE,
    Transport,
)

log = logging.getLogger("router.delivery")


class Resolve:
    """Outermost delivery stage: turn the outcome into a durable decision."""

    def __init__(
        self,
        *,
        state: StateStore,
        transport: Transport,
        metrics: Metrics,
        policy_for: Callable[[str], RetryPolicy],
        sent_ttl: float,
    ) -> None:
        self.state = state
        self.transport = transport
        self.metrics = metrics
        self.policy_for = policy_for
        self.sent_ttl = sent_ttl

    async def __call__(self, delivery: Delivery, next: Next) -> Outcome:
        started = time.perf_counter()
        outcome = await next(delivery)
        action = await self.resolve(delivery, outcome)
        self.metrics.deliveries.labels(delivery.channel, action).inc()
        if not log.isEnabledFor(logging.INFO):
            return outcome  # skip building the fields below: at WARNING this line costs nothing
        log.info(
            "delivery %s",
            action,
            extra={
                "fields": {
                    "event_id": delivery.event.id,
                    "rule": delivery.rule,
                    "channel": delivery.channel,
                    "outcome": action,
                    "attempt": delivery.attempt,
                    "latency_ms": round((time.perf_counter() - started) * 1000, 2),
                    **({"reason": outcome.reason} if outcome.reason else {}),
                }
            },
        )
        return outcome

    async def resolve(self, delivery: Delivery, outcome: Outcome) -> str:
        if outcome.status == "sent":
            await self.state.mark_sent(delivery.key, self.sent_ttl)
            return "sent"
        if outcome.status == "skipped":
            return "skipped"
        policy = self.policy_for(delivery.rule)
        if outcome.status == "retry" and delivery.attempt < policy.attempts:
            delay = retry_delay(policy, delivery.attempt, outcome.retry_after)
            record = RetryRecord(
                kind="delivery",
                event=delivery.event,
                rule=delivery.rule,
                attempt=delivery.attempt,
                channel=delivery.channel,
                message=delivery.message,
                last_error=outcome.reason,
            )
            await self.transport.schedule_retry(record.to_bytes(), delay=delay, headers=delivery_headers(delivery))
            self.metrics.retries_scheduled.labels(delivery.channel).inc()
            return "retry"
        reason = "exhausted" if outcome.status == "retry" else "permanent"
        await dead_letter_delivery(self.transport, self.metrics, delivery, reason, outcome.reason)
        return "dead"


def delivery_headers(delivery: Delivery) -> dict[str, object]:
    return {
        H_KIND: "delivery",
        H_EVENT_ID: delivery.event.id,
        H_RULE: delivery.rule,
        H_CHANNEL: delivery.channel,
        H_ATTEMPTS: delivery.attempt,
    }


async def dead_letter_delivery(
    transport: Transport, metrics: Metrics, delivery: Delivery, reason: str, error: str
) -> None:
    """Dead-letter one delivery with its record (so `router dlq replay` can send it again)."""
    record = RetryRecord(
        kind="delivery",
        event=delivery.event,
        rule=delivery.rule,
        attempt=delivery.attempt,
        channel=delivery.channel,
        message=delivery.message,
        last_error=error,
    )
    headers = {**delivery_headers(delivery), H_REASON: reason, H_ERROR: error}
    await transport.dead_letter(record.to_bytes(), headers=headers)
    metrics.dead_letters.labels(reason).inc()
