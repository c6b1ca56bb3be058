"""The delivery engine: what happens to each message a transport hands over.

    Incoming -> decode -> event_received hooks -> match -> for each rule: job
      -> (notify) render + one delivery per channel -> delivery stages -> channel
      -> every delivery resolved -> acknowledge

An event is acknowledged only when every delivery it produced is resolved (sent and recorded,
durably scheduled for retry, or dead-lettered). If resolution itself fails (the broker or the
state store is down) the event is requeued, and deliveries already recorded as sent are
skipped when it comes back.

Every dead letter is followed by its failure notification (router/engine/failures.py), delivered
through the same stages before the message is acknowledged. Under dry run the innermost stage
logs instead of sending (router/pipeline/dryrun.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel

from router.activity.recorder import NullRecorder
from router.activity.records import rejected_id
from router.channels.base import Channel
from router.config.models import Rule
from router.core.delivery import Delivery
from router.core.errors import DecodeError, TemplateError, UnknownChannelError
from router.core.events import Event, decode, encode
from router.core.message import Message, Outcome
from router.core.records import ForgedRecord, RetryRecord
from router.engine.failures import RULE_MARK, Failure, FailureNotifier
from router.flow.control import FlowControl
from router.flow.digest import with_digest_meta
from router.flow.resume import Resume
from router.jobs.base import Job
from router.jobs.context import RuleJobContext, ScopedJobState
from router.pipeline.backoff import retry_delay
from router.pipeline.builder import build_pipeline
from router.pipeline.chain import Next
from router.pipeline.fold import FOLD_RULE
from router.plugins.manager import Hooks
from router.runtime.runtime import Runtime
from router.state.base import StateStore
from router.support.isolation import is_router_cancellation
from router.support.log_limit import LogLimiter
from router.support.metrics import Metrics
from router.transports.base import (
    H_ATTEMPTS,
    H_EVENT_ID,
    H_KIND,
    H_RULE,
    Incoming,
    Transport,
)
from router.transports.dead_letters import DeadLetters

log = logging.getLogger("router.engine")

T = TypeVar("T")

JOB_DONE_SUFFIX = ":job"
REQUEUE_LOG_INTERVAL = 10.0  # seconds between two "could not resolve" lines for the same failure
# Namespace of the default ids of events jobs publish (uuid5 of event id, rule and position).
_FOLLOW_UP_NAMESPACE = uuid.UUID("0f5b6c1e-3d2a-5b7e-9a41-6f1c2d3e4b5a")


class ResolutionError(Exception):
    """Resolving a delivery failed (transport or state store unavailable): requeue the event."""


@dataclass
class Generation:
    """One configuration in force: the runtime, its channel instances and its pipeline.

    A reload builds a new generation; messages already being handled finish on theirs.
    """

    runtime: Runtime
    channels: dict[str, Channel]
    deliver: Next
    jobs: dict[str, Job] = field(default_factory=dict)  # one instance per job the rules use
    dry_run: bool = False  # deliveries are logged (pipeline/dryrun.py), not sent
    in_flight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def enter(self) -> None:
        self.in_flight += 1
        self.idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self.idle.set()


class Engine:
    """Consumes Incoming messages from a transport and resolves every delivery they produce."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        transport: Transport,
        state: StateStore,
        hooks: Hooks,
        metrics: Metrics | None = None,
        send_timeout: float = 60.0,
        dry_run: bool = False,
        activity: NullRecorder | None = None,
    ) -> None:
        self.transport = transport
        self.activity = activity or NullRecorder()  # one call per verdict and job run (docs/activity.md)
        self.state = state
        self.hooks = hooks
        self.metrics = metrics or Metrics()
        self.send_timeout = send_timeout
        self.force_dry_run = dry_run  # `router serve --dry-run`: on whatever rules.yaml says
        self.failures = FailureNotifier(self.metrics)
        self.dead_letters = DeadLetters(transport, self.metrics)
        self._tasks: set[asyncio.Task[None]] = set()
        self._requeue_log = LogLimiter(REQUEUE_LOG_INTERVAL)
        # When a message last started or finished being handled (app/watchdog.py: a stalled consumer).
        self.last_progress = time.monotonic()
        self.flow = FlowControl(
            state=state,
            transport=transport,
            metrics=self.metrics,
            runtime=lambda: self.generation.runtime,
            activity=self.activity,
        )
        self.generation = self._build_generation(runtime)
        self.metrics.dry_run.set(int(self.generation.dry_run))

    # ----------------------------------------------------------------- generations

    def _build_generation(self, runtime: Runtime) -> Generation:
        channels: dict[str, Channel] = {}
        for name, config in runtime.loaded.channel_configs.items():
            channels[name] = runtime.registry.channels[config.type](name, config)

        async def on_dead(delivery: Delivery, reason: str, error: str) -> None:
            await self._notify_failure(generation, Failure.of_delivery(delivery, reason, error))

        dry_run = self.force_dry_run or runtime.config.dry_run
        deliver = build_pipeline(
            runtime,
            channels,
            state=self.state,
            transport=self.transport,
            metrics=self.metrics,
            hooks=self.hooks,
            send_timeout=self.send_timeout,
            dry_run=dry_run,
            on_dead=on_dead,
            on_fold=self.flow.flusher.wake,
            activity=self.activity,
        )
        jobs = {rule.job: runtime.registry.jobs[rule.job]() for rule in runtime.config.rules}
        generation = Generation(runtime=runtime, channels=channels, deliver=deliver, jobs=jobs, dry_run=dry_run)
        generation.idle.set()
        return generation

    @property
    def runtime(self) -> Runtime:
        return self.generation.runtime

    async def swap(self, runtime: Runtime, *, drain_timeout: float = 60.0) -> None:
        """Put ``runtime`` in force; the old generation's channels close once its work is done."""
        old = self.generation
        self.generation = self._build_generation(runtime)
        self.metrics.dry_run.set(int(self.generation.dry_run))
        if self.generation.dry_run != old.dry_run:
            log.warning("dry run: nothing will be sent" if self.generation.dry_run else "dry run is off: sending")
        task = asyncio.create_task(self._retire(old, drain_timeout))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _retire(self, generation: Generation, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await generation.idle.wait()
        except TimeoutError:
            log.warning("closing channels of the previous configuration with work still in flight")
        await close_generation(generation)

    async def start(self) -> None:
        """Start background work (the digest flusher); call once the transport is connected."""
        await self.flow.flusher.start()

    async def close(self) -> None:
        """Close the channels and jobs of the configuration in force (after the transport stopped)."""
        await self.flow.flusher.close()
        for task in list(self._tasks):
            await task
        await close_generation(self.generation)

    # ----------------------------------------------------------------- messages

    async def handle(self, incoming: Incoming) -> None:
        """Process one message and acknowledge it, or requeue it if resolution failed."""
        generation = self.generation
        generation.enter()
        self.last_progress = time.monotonic()
        self.metrics.in_flight.inc()
        self.metrics.events_received.labels(incoming.kind).inc()
        try:
            try:
                if incoming.kind == "retry":
                    await self._handle_retry(generation, incoming)
                else:
                    await self._handle_event(generation, incoming)
            except BaseException as error:  # BaseException too: a plugin's SystemExit must not end the process
                if is_router_cancellation(error):
                    raise
                self.metrics.events_requeued.inc()
                # One line per kind of failure per interval: a full disk fails every message alike.
                suppressed = self._requeue_log.allow((incoming.kind, type(error).__name__))
                if suppressed is not None:
                    log.error(
                        "could not resolve message, requeued: %s%s",
                        type(error).__name__,
                        f" ({suppressed} more like it since the last line)" if suppressed else "",
                        extra={
                            "fields": {"kind": incoming.kind, "error": type(error).__name__, "suppressed": suppressed}
                        },
                    )
                if incoming.requeue is not None:
                    await incoming.requeue()
                return
            if incoming.ack is not None:
                await incoming.ack()
        finally:
            self.last_progress = time.monotonic()
            self.metrics.in_flight.dec()
            generation.leave()

    async def _handle_event(self, generation: Generation, incoming: Incoming) -> None:
        runtime = generation.runtime
        started = time.perf_counter()
        max_body = runtime.config.broker.max_body_bytes
        if len(incoming.body) > max_body:
            await self._dead_letter_poison(
                incoming, "oversize", f"body of {len(incoming.body)} bytes exceeds {max_body}"
            )
            return
        try:
            event = decode(
                incoming.body,
                content_type=incoming.content_type,
                headers=incoming.headers,
                routing_key=incoming.routing_key,
            )
        except DecodeError as error:
            await self._dead_letter_poison(incoming, "poison", str(error))
            return
        except Exception as error:
            # A decoder bug must not become a requeue loop: the message itself is what fails.
            log.exception("the decoder failed on a message; dead-lettering it")
            await self._dead_letter_poison(incoming, "poison", f"the decoder failed: {type(error).__name__}")
            return
        self.metrics.events_decoded.inc()
        if self.hooks.has_event_received:
            event = await self.hooks.event_received(event)
        schema = runtime.loaded.event_schemas.get(event.type)  # types without a schema: this lookup only
        if schema is not None and (problem := schema.check(event.data)) is not None:
            # Refused whole, never retried: the same data would fail the same way every time.
            await self._dead_letter_poison(incoming, "schema", problem, event=event)
            return
        self.activity.event(event, len(incoming.body), "none" if schema is None else "ok")
        rules = runtime.index.match(event)
        if len(rules) == 1:
            # The common case, without gather's task: same outcome, a fraction of the cost.
            await self._run_rule(generation, event, rules[0])
        elif rules:
            # Let every rule finish before deciding: requeueing while another rule is still
            # delivering would race its redelivery against the deliveries in flight.
            results = await asyncio.gather(
                *(self._run_rule(generation, event, rule) for rule in rules), return_exceptions=True
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        if not log.isEnabledFor(logging.DEBUG):
            return  # skip building the fields below: at INFO (the default) this line costs nothing
        # DEBUG, not INFO: the activity record tells each event's story (`router trace`), and a
        # line per event was a measurable share of the CPU (bench/README.md, section 7).
        log.debug(
            "event handled",
            extra={
                "fields": {
                    "event_id": event.id,
                    "type": event.type,
                    "rules": [rule.name for rule in rules],
                    "latency_ms": round((time.perf_counter() - started) * 1000, 2),
                }
            },
        )

    async def _handle_retry(self, generation: Generation, incoming: Incoming) -> None:
        runtime = generation.runtime
        try:
            record = RetryRecord.from_bytes(incoming.body)
        except ForgedRecord as error:
            # Kept as it came (never signed again): a replay cannot launder it into a delivery.
            await self._dead_letter_poison(incoming, "forged", str(error))
            return
        except DecodeError as error:
            await self._dead_letter_poison(incoming, "poison", str(error))
            return
        except Exception as error:
            log.exception("a retry record could not be read; dead-lettering it")
            await self._dead_letter_poison(
                incoming, "poison", f"the retry record is unreadable: {type(error).__name__}"
            )
            return
        rule = runtime.rule(record.rule)
        if record.kind == "job":
            if rule is None:
                await self._dead_letter_record(record, "rule-removed", f"rule '{record.rule}' is no longer configured")
                return
            resume = Resume.from_record(record)
            await self._run_rule(generation, record.event, rule, attempt=record.attempt + 1, resume=resume)
            return
        channel = record.channel or ""
        if channel not in runtime.config.channels or record.message is None:
            await self._dead_letter_record(record, "channel-removed", f"channel '{channel}' is no longer configured")
            return
        if record.rule != FOLD_RULE and RULE_MARK not in record.rule and rule is None:
            await self._dead_letter_record(record, "rule-removed", f"rule '{record.rule}' is no longer configured")
            return
        if not routes_to(runtime, record.rule, channel):
            await self._dead_letter_poison(
                incoming, "forged", f"rule '{record.rule}' does not deliver to channel '{channel}'"
            )
            return
        delivery = Delivery(
            event=record.event,
            rule=record.rule,
            channel=channel,
            channel_type=runtime.channel_type(channel),
            message=record.message,
            attempt=record.attempt + 1,
        )
        await self.run_delivery(generation, delivery)

    # ----------------------------------------------------------------- rules and jobs

    async def _run_rule(
        self, generation: Generation, event: Event, rule: Rule, attempt: int = 1, resume: Resume | None = None
    ) -> None:
        runtime = generation.runtime
        self.metrics.rules_matched.labels(rule.name).inc()
        job = generation.jobs[rule.job]
        options = runtime.job_options(rule)
        job_key = f"{event.key}:{rule.name}{JOB_DONE_SUFFIX}"
        is_notify = rule.job == "notify"
        if not is_notify and await self.state.is_sent(job_key):
            return
        try:
            admitted = await self.flow.admit(runtime, event, rule, resume)
        except TemplateError as error:  # a dedupe/throttle/... key that does not render
            await self._dead_letter_event(event, rule, "render", str(error), attempt)
            return
        except Exception as error:
            raise ResolutionError(f"flow control failed: {type(error).__name__}") from error
        if admitted is None:
            return  # skipped, dropped, delayed or collected: flow control resolved it
        self.activity.verdict(event.id, rule.name, "fired")
        context = self._job_context(generation, event, rule, options, attempt, admitted.events)
        try:
            await job.handle(context)
        except ResolutionError:
            raise
        except TemplateError as error:
            # A digest goes to the dead-letter queue whole, so a replay delivers the whole batch.
            kind = "job" if admitted.events else "event"
            await self._dead_letter_event(event, rule, "render", str(error), attempt, kind=kind, resume=admitted)
            return
        except UnknownChannelError as error:
            # No retry can configure the channel: dead-lettered at once, replayable once it exists.
            await self._dead_letter_event(
                event, rule, "unknown-channel", str(error), attempt, kind="job", resume=admitted
            )
            return
        except BaseException as error:  # plugin code: CancelledError or SystemExit fail the job like any error
            if is_router_cancellation(error):
                raise
            reason = f"job {rule.job} raised {type(error).__name__}"
            await self._job_failed(runtime, event, rule, attempt, reason, admitted)
            return
        if not is_notify:
            await self.state.mark_sent(job_key, runtime.config.state.idempotency_window)
            self.activity.job(event.id, rule.name, rule.job, "ok")

    def _job_context(
        self,
        generation: Generation,
        event: Event,
        rule: Rule,
        options: BaseModel,
        attempt: int,
        events: tuple[Event, ...],
    ) -> RuleJobContext:
        runtime = generation.runtime
        channels = runtime.config.channels
        published = 0  # publishes of this run, for their default ids

        def render(channel: str | None, template: str | None) -> Message:
            if channel is not None and channel not in channels:
                raise UnknownChannelError(rule.name, channel, list(channels))
            message = runtime.render(rule, channel, event, template=template, events=events or None)
            return with_digest_meta(message, events)

        async def deliver(channel: str, message: Message) -> Outcome:
            if channel not in channels:
                raise UnknownChannelError(rule.name, channel, list(channels))
            delivery = Delivery(event, rule.name, channel, runtime.channel_type(channel), message, attempt=1)
            return await self.run_delivery(generation, delivery)

        async def publish(type: str, data: dict[str, Any], id: str | None = None) -> str:
            nonlocal published
            published += 1
            # A retried run publishes under the same ids, so what its first try published is recognised.
            event_id = id if id is not None else follow_up_id(event.id, rule.name, published)
            return await self.publish(type, data, source=f"router/{rule.name}", id=event_id)

        return RuleJobContext(
            event=event,
            rule=rule,
            options=options,
            state=ScopedJobState(self.state, rule.job),
            render=render,
            deliver=deliver,
            publish=publish,
            attempt=attempt,
            events=events,
        )

    async def _job_failed(
        self, runtime: Runtime, event: Event, rule: Rule, attempt: int, reason: str, admitted: Resume
    ) -> None:
        policy = runtime.config.retry_for(rule)
        log.warning(reason, extra={"fields": {"event_id": event.id, "rule": rule.name, "attempt": attempt}})
        if attempt < policy.attempts:
            # The record says flow control already admitted the job: a retry is not throttled or counted again.
            record = admitted.record(event, rule, attempt, last_error=reason)
            headers = {H_KIND: "job", H_EVENT_ID: event.id, H_RULE: rule.name, H_ATTEMPTS: attempt}
            await self._guard(
                self.transport.schedule_retry(record.to_bytes(), delay=retry_delay(policy, attempt), headers=headers)
            )
            self.metrics.retries_scheduled.labels(f"job:{rule.job}").inc()
            self.activity.job(event.id, rule.name, rule.job, "retry", reason)
            return
        await self._dead_letter_event(event, rule, "exhausted", reason, attempt, kind="job", resume=admitted)

    async def run_delivery(self, generation: Generation, delivery: Delivery) -> Outcome:
        """Run one delivery through the stages; raises ResolutionError if it could not be resolved."""
        try:
            return await generation.deliver(delivery)
        except ResolutionError:
            raise
        except Exception as error:
            raise ResolutionError(f"delivery could not be resolved: {type(error).__name__}") from error

    # ----------------------------------------------------------------- dead letters and publishing

    async def _dead_letter_poison(
        self, incoming: Incoming, reason: str, error: str, *, event: Event | None = None
    ) -> None:
        """Dead-letter a message as it came (undecodable, oversize; ``event`` when it decoded but is refused).

        The activity records it as ``rejected`` once the dead letter is durable (docs/activity.md)."""
        letter_id = await self._guard(self.dead_letters.message(incoming, reason, error, event=event))
        log.warning(
            "message dead-lettered",
            extra={"fields": {"reason": reason, "error": error, "routing_key": incoming.routing_key}},
        )
        failure = Failure.of_message(incoming.body, reason, error, event)
        if self.activity.enabled:
            # Under the id its failure notification is delivered under, so both tell one story.
            event_id = rejected_id(
                incoming.kind,
                failure.body_digest or "",
                event_id=event.id if event is not None else None,
                message_id=incoming.message_id,
            )
            self.activity.rejected(
                event_id,
                size=len(incoming.body),
                reason=reason,
                error=error,
                dead_letter_id=letter_id,
                event=event,
                routing_key=incoming.routing_key,
            )
        await self._notify_failure(self.generation, failure)

    async def _dead_letter_event(
        self,
        event: Event,
        rule: Rule,
        reason: str,
        error: str,
        attempt: int,
        kind: str = "event",
        resume: Resume | None = None,
    ) -> None:
        """Dead-letter a rule's failure: the event, or (``kind="job"``) a record that replays the job."""
        if kind == "job":
            record = (resume or Resume("admitted")).record(event, rule, attempt, last_error=error)
            await self._guard(self.dead_letters.record(record, reason, error))
        else:
            await self._guard(self.dead_letters.event(event, rule.name, reason, error, attempt))
        self.activity.job(event.id, rule.name, rule.job, "dead", f"{reason}: {error}")
        log.warning(
            "rule dead-lettered",
            extra={"fields": {"event_id": event.id, "rule": rule.name, "reason": reason, "error": error}},
        )
        await self._notify_failure(self.generation, Failure(reason, error, attempt, event=event, rule=rule.name))

    async def _dead_letter_record(self, record: RetryRecord, reason: str, error: str) -> None:
        """Dead-letter a retry record that can no longer run (its rule or channel is gone)."""
        await self._guard(self.dead_letters.record(record, reason, error))
        if record.kind == "delivery" and record.message is not None and record.channel is not None:
            delivery = Delivery(record.event, record.rule, record.channel, "", record.message, record.attempt)
            failure = Failure.of_delivery(delivery, reason, error)
        else:
            failure = Failure(reason, error, record.attempt, event=record.event, rule=record.rule)
        await self._notify_failure(self.generation, failure)

    async def _notify_failure(self, generation: Generation, failure: Failure) -> None:
        """Deliver the ``on_failure`` notification of a dead letter (router/engine/failures.py), like any delivery:
        resolved (sent, scheduled for retry or dead-lettered itself) before the message is acknowledged."""
        deliveries = self.failures.plan(generation.runtime, failure)
        results = await asyncio.gather(
            *(self.run_delivery(generation, delivery) for delivery in deliveries), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _guard(self, operation: Awaitable[T]) -> T:
        """Await a transport write (its answer); its failure means the message must be requeued."""
        try:
            return await operation
        except Exception as error:
            raise ResolutionError(f"transport write failed: {type(error).__name__}") from error

    async def publish(self, type: str, data: dict[str, Any], *, source: str = "router", id: str | None = None) -> str:
        """Publish a new event (from a job, the CLI or HTTP ingest); returns its id (random unless given)."""
        event = Event(
            type=type,
            id=id if id is not None else uuid.uuid4().hex,
            source=source,
            time=datetime.now(UTC),
            data=data,
        )
        await self.transport.publish_event(encode(event), routing_key=type, content_type="application/cloudevents+json")
        return event.id


def routes_to(runtime: Runtime, rule_name: str, channel: str) -> bool:
    """Whether the configuration in force can produce a delivery of ``rule_name`` to ``channel``:
    the rule lists it (a custom job may deliver to any channel), it is a failure notification of
    the ``on_failure`` in force, or a fold summary (router/pipeline/fold.py)."""
    if rule_name == FOLD_RULE:
        return True  # the flusher folds any configured channel's deliveries
    if rule_name == RULE_MARK or rule_name.startswith(f"{RULE_MARK}:"):
        base, mark = "", RULE_MARK  # the notification of a message that had no rule (poison)
    else:
        base, mark, _ = rule_name.partition(f":{RULE_MARK}")
    if mark:
        spec = runtime.config.on_failure_for(runtime.rule(base) if base else None)
        return spec is not None and channel in spec.channels
    rule = runtime.rule(rule_name)
    if rule is None:
        return False
    return rule.job != "notify" or channel in rule.channels


def follow_up_id(event_id: str, rule: str, n: int) -> str:
    """The default id of the ``n``-th event a job publishes for ``(event_id, rule)``: stable across retries."""
    return uuid.uuid5(_FOLLOW_UP_NAMESPACE, f"{event_id}\x00{rule}\x00{n}").hex


async def close_generation(generation: Generation) -> None:
    """Close every channel and job; one that fails to close is logged, not fatal."""
    closers: list[tuple[str, Any]] = [(f"channel {n}", c.aclose) for n, c in generation.channels.items()]
    closers += [(f"job {n}", j.aclose) for n, j in generation.jobs.items()]
    for what, aclose in closers:
        try:
            await aclose()
        except Exception as error:
            log.warning("%s failed to close: %s", what, type(error).__name__)
