"""Apply a rule's flow control before its job runs: dedupe, rate_limit, throttle, digest, in that order.

Repeats are skipped before they cost a rate-limit slot; dropped events never wait; delayed
events are collected into a digest only once their slot came. Each decision is made once per
(event, rule): the records that bring a job back carry a :class:`Resume` saying how far it got.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from router.activity.recorder import NullRecorder
from router.activity.records import FLOW_VERDICTS
from router.config.models import Rule
from router.core.events import Event
from router.flow import dedupe, digest, ratelimit, throttle
from router.flow.flusher import DigestFlusher
from router.flow.keys import render_key
from router.flow.resume import ADMITTED, Resume, job_headers
from router.runtime.runtime import Runtime
from router.state.base import StateStore
from router.support.metrics import Metrics
from router.transports.base import Transport

log = logging.getLogger("router.flow")


class FlowControl:
    """The flow-control decisions of one engine, and its digest flusher."""

    def __init__(
        self,
        *,
        state: StateStore,
        transport: Transport,
        metrics: Metrics,
        runtime: Callable[[], Runtime],
        hold: float = throttle.HOLD,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        activity: NullRecorder | None = None,
    ) -> None:
        self.state = state
        self.activity = activity or NullRecorder()
        self.transport = transport
        self.metrics = metrics
        self.hold = hold
        self.clock = clock
        self.sleep = sleep
        self.throttle_locks = throttle.KeyedLocks()
        self.flusher = DigestFlusher(state=state, transport=transport, metrics=metrics, runtime=runtime, clock=clock)

    async def admit(self, runtime: Runtime, event: Event, rule: Rule, resume: Resume | None = None) -> Resume | None:
        """Decide whether ``rule``'s job runs for ``event`` now.

        Returns how it runs (for a digest, on which events), or None when flow control took the
        event (skipped, dropped, delayed or collected: durable in the store or the transport
        when this returns). Raises TemplateError when a key does not render.
        """
        if resume is not None and resume.stage == "admitted":
            return resume
        if resume is None:
            if not await self._first_decisions(runtime, event, rule):
                return None
            slot = await self._reserve(runtime, event, rule)
        else:
            slot = resume.slot
        if slot is not None and not await self._wait_for(event, rule, slot):
            return None
        if rule.digest is not None:
            key = render_key(runtime, rule, event, rule.digest.key)
            added = await digest.collect(self.state, rule, rule.digest, key, event)
            self._decided(rule, "collected", event, key=key, count=added.count)
            if added.full:
                self.flusher.wake()
            return None
        return ADMITTED

    async def _first_decisions(self, runtime: Runtime, event: Event, rule: Rule) -> bool:
        """dedupe then rate_limit: False when the event stops here."""
        if rule.dedupe is not None:
            key = render_key(runtime, rule, event, rule.dedupe.key)
            if not await dedupe.is_first(self.state, rule, rule.dedupe, key, event):
                self._decided(rule, "skipped", event, key=key)
                return False
        if rule.rate_limit is not None:
            key = render_key(runtime, rule, event, rule.rate_limit.key)
            if not await ratelimit.allows(self.state, rule, rule.rate_limit, key):
                self._decided(rule, "dropped", event, key=key)
                return False
        return True

    async def _reserve(self, runtime: Runtime, event: Event, rule: Rule) -> float | None:
        """The throttle slot (epoch) the event must wait for; None when it may run now."""
        if rule.throttle is None:
            return None
        key = render_key(runtime, rule, event, rule.throttle.key)
        wait = await throttle.reserve(self.state, rule, rule.throttle, key, self.throttle_locks)
        if wait <= 0:
            return None
        self._decided(rule, "delayed", event, key=key, wait=round(wait, 3))
        return self.clock() + wait

    async def _wait_for(self, event: Event, rule: Rule, slot: float) -> bool:
        """Wait for ``slot`` in the process when it is near (True), else schedule the job to come back (False)."""
        remaining = slot - self.clock()
        if remaining <= self.hold:
            if remaining > 0:
                await self.sleep(remaining)
            return True
        record = Resume("waiting", slot=slot).record(event, rule, attempt=0)
        delay = throttle.hop_delay(remaining, self.hold)
        await self.transport.schedule_retry(record.to_bytes(), delay=delay, headers=job_headers(event, rule.name, 0))
        return False

    def _decided(self, rule: Rule, decision: str, event: Event, **fields: object) -> None:
        self.metrics.flow.labels(rule.name, decision).inc()
        self.activity.verdict(event.id, rule.name, FLOW_VERDICTS[decision], _reason(decision, fields))
        log.debug(
            "event %s by rule %s",
            decision,
            rule.name,
            extra={"fields": {"event_id": event.id, "rule": rule.name, "decision": decision, **fields}},
        )


def _reason(decision: str, fields: dict[str, object]) -> str:
    """The activity's reason for a flow-control decision (the key is the rule's own rendering)."""
    key = fields.get("key")
    if decision == "skipped":
        return f"duplicate of key {key!r} within the dedupe window"
    if decision == "dropped":
        return f"rate limit of key {key!r} reached"
    if decision == "delayed":
        return f"throttled: waits {fields.get('wait')}s (key {key!r})"
    return f"collected into the digest of key {key!r} ({fields.get('count')} so far)"
