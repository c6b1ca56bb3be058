"""Resolve each outcome durably: record what was sent, schedule retries, dead-letter the rest.

This stage is what lets the engine acknowledge an event: when it returns, the delivery is
sent and recorded, durably scheduled for retry, or in the dead-letter queue.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from router.activity.recorder import NullRecorder
from router.config.models import RetryPolicy
from router.core.delivery import Delivery
from router.core.message import Outcome
from router.pipeline.backoff import retry_delay
from router.pipeline.chain import Next
from router.pipeline.dryrun import DRY_RUN
from router.pipeline.idempotency import ALREADY_SENT
from router.state.base import StateStore
from router.support.metrics import Metrics
from router.transports.base import (
    Transport,
)
from router.transports.dead_letters import DeadLetters, delivery_headers, delivery_record

log = logging.getLogger("router.delivery")

NOTABLE = frozenset({"retry", "failed"})
"""Outcomes logged at INFO: a delivery that failed (retry scheduled, or dead-lettered). The
routine ones (``sent``, ``skipped``, ``dry_run``) are logged at DEBUG: the activity record
(router/activity/, `router activity`, `router trace`) tells every event's story, and two INFO
lines per event were 8-11% of the router's CPU (bench/README.md, section 7)."""

OnDead = Callable[[Delivery, str, str], Awaitable[None]]
"""Called with (delivery, reason, error) once a delivery is durably dead-lettered (failure notifications)."""


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
        on_dead: OnDead | None = None,
        activity: NullRecorder | None = None,
    ) -> None:
        self.activity = activity or NullRecorder()
        self.state = state
        self.transport = transport
        self.metrics = metrics
        self.dead_letters = DeadLetters(transport, metrics)
        self.policy_for = policy_for
        self.sent_ttl = sent_ttl
        self.on_dead = on_dead

    async def __call__(self, delivery: Delivery, next: Next) -> Outcome:
        started = time.perf_counter()
        started_at = time.time()
        outcome = await next(delivery)
        action, retry_in, letter_id = await self.resolve(delivery, outcome)
        self.metrics.deliveries.labels(delivery.channel, action).inc()
        if self.activity.enabled:
            recorded = "already_sent" if outcome.reason == ALREADY_SENT else ("dead" if action == "failed" else action)
            duration = time.perf_counter() - started
            retry_at = started_at + duration + retry_in if retry_in is not None else None
            self.activity.attempt(delivery, outcome, recorded, started_at, duration, retry_at, letter_id)
        level = logging.INFO if action in NOTABLE else logging.DEBUG
        if log.isEnabledFor(level):  # skip building the fields when the line is not logged
            self._log(level, delivery, outcome, action, started)
        if action == "failed" and self.on_dead is not None:
            # After the dead letter is durable and logged: a notification's own lines follow it.
            await self.on_dead(delivery, dead_reason(outcome), outcome.reason)
        return outcome

    def _log(self, level: int, delivery: Delivery, outcome: Outcome, action: str, started: float) -> None:
        log.log(
            level,
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

    async def resolve(self, delivery: Delivery, outcome: Outcome) -> tuple[str, float | None, str | None]:
        """What became of the delivery, in the words of ``Outcome.status`` (one vocabulary for logs,
        metrics and the API): ``sent``, ``retry`` (scheduled), ``failed`` (dead-lettered: permanent or
        out of attempts), ``skipped``, or ``dry_run`` (a skip under dry run, told apart); with a
        retry's delay in seconds and a dead letter's id."""
        if outcome.status == "sent":
            await self.state.mark_sent(delivery.key, self.sent_ttl)
            return "sent", None, None
        if outcome.status == "skipped":
            # Dry run is not recorded as sent: turning it off must never suppress a real send.
            return ("dry_run" if outcome.reason == DRY_RUN else "skipped"), None, None
        policy = self.policy_for(delivery.rule)
        if outcome.status == "retry" and delivery.attempt < policy.attempts:
            delay = retry_delay(policy, delivery.attempt, outcome.retry_after)
            record = delivery_record(delivery, outcome.reason)
            await self.transport.schedule_retry(record.to_bytes(), delay=delay, headers=delivery_headers(delivery))
            self.metrics.retries_scheduled.labels(delivery.channel).inc()
            return "retry", delay, None
        letter_id = await self.dead_letters.delivery(delivery, dead_reason(outcome), outcome.reason)
        return "failed", None, letter_id


def dead_reason(outcome: Outcome) -> str:
    """Why a delivery with ``outcome`` is dead-lettered: retries ran out, or the failure is permanent."""
    return "exhausted" if outcome.status == "retry" else "permanent"
