"""Dry run: the innermost stage that logs each delivery instead of sending it.

In place of :class:`router.pipeline.send.Send` when ``dry_run: true`` is set in rules.yaml or
`router serve --dry-run` is given. Every delivery is rendered as usual and logged at INFO (event
id, rule, channel, title, the body cut short and, when the message has one, its rich payload),
then resolved as ``dry_run`` (counted in ``router_deliveries{outcome="dry_run"}``) so the event is
acknowledged.

A dry-run delivery is *not* recorded as sent: turning dry run off never suppresses a real send.
The price is that an event redelivered during a dry run is logged again.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from router.core.delivery import Delivery
from router.core.message import Outcome
from router.core.redact import Content
from router.templating.filters import truncate_text

log = logging.getLogger("router.dry_run")

DRY_RUN = "dry run"
"""The reason of a dry-run outcome (status ``skipped``): :class:`router.pipeline.resolve.Resolve` counts it as ``dry_run``."""
BODY_SHOWN = 200
PAYLOAD_SHOWN = 500


class DryRun:
    """Terminal stage: log what would be sent, send nothing."""

    async def __call__(self, delivery: Delivery) -> Outcome:
        message = delivery.message
        fields: dict[str, Any] = {
            "event_id": delivery.event.id,
            "rule": delivery.rule,
            "channel": delivery.channel,
            "channel_type": delivery.channel_type,
            # Content: links in the message are shown whole (registered secrets are still masked).
            "title": Content(message.title),
            "body": Content(truncate_text(message.body, BODY_SHOWN)),
        }
        # Message.payload (a channel's rich payload, e.g. Discord embeds) may not exist in every version.
        payload = getattr(message, "payload", None)
        if payload is not None:
            text = json.dumps(payload, default=str, ensure_ascii=False)
            fields["payload"] = Content(truncate_text(text, PAYLOAD_SHOWN))
        log.info("dry run: would deliver", extra={"fields": fields})
        return Outcome("skipped", DRY_RUN)
