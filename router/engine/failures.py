"""Failure notifications: tell a person when something is dead-lettered.

Every dead letter (a delivery that failed for good, a rule whose template or job failed, a
message that could not be decoded, ...) becomes a :class:`Failure`. The ``on_failure`` in force
(the rule's, else ``defaults.on_failure``; ``on_failure: false`` turns it off for a rule) names a
template and channels: the template is rendered once per channel with the failure as context and
each message goes through the ordinary delivery pipeline as a delivery of its own. It is retried,
paced, dead-lettered and made idempotent like any other: its rule name is
``<rule>:on_failure:<failed channel>`` (``<rule>:on_failure`` for a rule-level failure), so a
redelivered event that fails again does not notify twice.

Never recursive: a notification carries the failure in its message meta (``meta["failure"]``), and
a failure of a message that carries one is dead-lettered and logged, never notified again.

The notification is resolved before the failed message is acknowledged. If it cannot be (the
broker or the state store is down), the message is requeued like any unresolved one: when it
comes back the dead letter may be written a second time, while the notification, once sent,
is not sent again.

A message that cannot be decoded has no event and no rule: it notifies through
``defaults.on_failure`` with ``event`` None and ``data`` empty; its notification is keyed by a
hash of the raw body, so the same poison message redelivered notifies once.

What a template sees (besides ``channel``, the channel the notification is rendered for, as in
every template): ``event`` (the original event, or None), ``data``, ``rule`` (the failed rule, as
in a rule's template, or ``{"name": ...}`` when it is no longer configured, or ``{}``), and
``failure``: reason, error, attempts, channel, channel_type, rule, event_id, event_type and
dead_letter_id, each always present (None when not known). Errors and reasons are secret-free by
construction (router/channels/classify.py); they are scrubbed of every registered secret again here.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from router.config.models import OnFailure
from router.core.delivery import Delivery
from router.core.errors import TemplateError
from router.core.events import Event
from router.core.message import Message
from router.core.redact import registered_secrets, scrub
from router.runtime.runtime import Runtime
from router.support.metrics import Metrics
from router.templating.templates import build_context

log = logging.getLogger("router.failures")

FAILURE_META = "failure"
"""Message meta key of a failure notification: the failure it reports (and the recursion guard)."""
RULE_MARK = "on_failure"
POISON_EVENT_TYPE = "router.poison"
"""Type of the stand-in event that carries the notification of a message that could not be decoded."""


@dataclass(frozen=True, slots=True)
class Failure:
    """One dead letter, as a failure notification reports it."""

    reason: str  # permanent, exhausted, render, poison, oversize, schema, channel-removed, ...
    error: str
    attempts: int
    event: Event | None = None
    rule: str | None = None
    channel: str | None = None
    channel_type: str | None = None
    dead_letter_id: str | None = None
    body_digest: str | None = None  # a hash of an undecodable message, to key its notification
    notification: bool = False  # the dead letter is itself a failure notification: do not notify

    @property
    def event_id(self) -> str | None:
        return self.event.id if self.event is not None else None

    @property
    def event_type(self) -> str | None:
        return self.event.type if self.event is not None else None

    def as_dict(self) -> dict[str, Any]:
        """What ``failure`` holds in a template and in the notification's meta: plain, secret-free values."""
        return {
            "reason": self.reason,
            "error": scrub(self.error, registered_secrets()),
            "attempts": self.attempts,
            "channel": self.channel,
            "channel_type": self.channel_type,
            "rule": self.rule,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "dead_letter_id": self.dead_letter_id,
        }

    @classmethod
    def of_delivery(cls, delivery: Delivery, reason: str, error: str) -> Failure:
        """The failure of one delivery (a notification's own failure is marked, so it never notifies)."""
        return cls(
            reason=reason,
            error=error,
            attempts=delivery.attempt,
            event=delivery.event,
            rule=delivery.rule,
            channel=delivery.channel,
            channel_type=delivery.channel_type or None,
            notification=is_notification(delivery.message),
        )

    @classmethod
    def of_message(cls, body: bytes, reason: str, error: str, event: Event | None = None) -> Failure:
        """The failure of a message as it came from the transport (undecodable, oversize, invalid)."""
        return cls(
            reason=reason, error=error, attempts=1, event=event, body_digest=hashlib.sha256(body).hexdigest()[:32]
        )


def is_notification(message: Message | None) -> bool:
    """Whether ``message`` is a failure notification (see :data:`FAILURE_META`)."""
    return message is not None and FAILURE_META in message.meta


def notification_rule(failure: Failure) -> str:
    """The rule name a notification is delivered (and made idempotent) under."""
    parts = [failure.rule or "", RULE_MARK]
    if failure.channel:
        parts.append(failure.channel)
    return ":".join(parts).lstrip(":")


class FailureNotifier:
    """Turns a :class:`Failure` into the deliveries of its notification."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def plan(self, runtime: Runtime, failure: Failure) -> list[Delivery]:
        """The notification deliveries for ``failure`` (none when it must not or need not notify).

        Never raises for a template that fails: that is logged and counted, as a notification
        about a failure must not fail the work that failed.
        """
        if failure.notification:
            self._count("suppressed")
            log.warning(
                "failure notification dead-lettered; not notifying about it",
                extra={"fields": _log_fields(failure)},
            )
            return []
        rule = runtime.rule(failure.rule) if failure.rule else None
        spec = runtime.config.on_failure_for(rule)
        if spec is None:
            return []
        channels = [name for name in spec.channels if name in runtime.config.channels]
        event = failure.event or _poison_event(failure)
        deliveries = []
        for channel in channels:
            message = self._render(runtime, spec, failure, channel)
            if message is None:
                continue
            deliveries.append(
                Delivery(
                    event=event,
                    rule=notification_rule(failure),
                    channel=channel,
                    channel_type=runtime.channel_type(channel),
                    message=message,
                )
            )
        self._count("notified", len(deliveries))
        return deliveries

    def _render(self, runtime: Runtime, spec: OnFailure, failure: Failure, channel: str) -> Message | None:
        channel_type = runtime.channel_type(channel)
        channel_class = runtime.registry.channels[channel_type]
        details = failure.as_dict()
        context = _context(runtime, failure, details)
        context["channel"] = {"name": channel, "type": channel_type, "markdown": channel_class.markdown}
        try:
            rendered = runtime.templates.render(
                spec.template,
                context,
                channel_type=channel_type,
                max_title=channel_class.max_title,
                max_body=channel_class.max_body,
                payload_model=channel_class.payload_model,  # a {% block discord %} etc., as in a rule's template
            )
        except TemplateError as error:
            self._count("render_error")
            log.error(
                "failure notification template failed: %s",
                error,
                extra={"fields": {**_log_fields(failure), "template": spec.template, "notify_channel": channel}},
            )
            return None
        event = failure.event
        meta: dict[str, Any] = {
            "event_id": event.id if event else None,
            "event_type": event.type if event else None,
            "source": event.source if event else None,
            "rule": notification_rule(failure),
            "channel": channel,
            FAILURE_META: details,
        }
        return Message(title=rendered.title, body=rendered.body, meta=meta, payload=rendered.payload)

    def _count(self, outcome: str, amount: int = 1) -> None:
        if amount:
            self.metrics.failure_notifications.labels(outcome).inc(amount)


def _context(runtime: Runtime, failure: Failure, details: dict[str, Any]) -> dict[str, Any]:
    rule = runtime.rule(failure.rule) if failure.rule else None
    if failure.event is not None:
        context = build_context(failure.event, rule=rule)
    else:
        context = {"event": None, "data": {}, "now": datetime.now(UTC), "rule": {}}
    if rule is None:
        context["rule"] = {"name": failure.rule} if failure.rule else {}
    context["failure"] = details
    return context


def _poison_event(failure: Failure) -> Event:
    """The event a notification without one is delivered under: its id keys the notification."""
    return Event(
        type=POISON_EVENT_TYPE,
        id=f"poison-{failure.body_digest or 'unknown'}",
        source="router",
        time=datetime.now(UTC),
        data={},
    )


def _log_fields(failure: Failure) -> dict[str, Any]:
    return {"reason": failure.reason, "rule": failure.rule, "channel": failure.channel, "event_id": failure.event_id}
