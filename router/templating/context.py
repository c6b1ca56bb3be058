"""The variables a template sees (:func:`build_context`), and events as templates read them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from router.core.events import Event

if TYPE_CHECKING:
    from router.config.models import Rule


class EventView(dict[str, Any]):
    """An event as a dict whose keys also read as attributes: ``event.type`` and ``event["type"]``."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def event_view(event: Event) -> EventView:
    return EventView(event.as_dict())


def build_context(
    event: Event,
    *,
    rule: Rule | None = None,
    channel: Mapping[str, Any] | None = None,
    events: Sequence[Event] | None = None,
) -> dict[str, Any]:
    """The variables a template sees: ``event``, ``data``, ``now``, ``rule``, ``channel`` and, for digests, ``events`` and ``count``.

    ``channel`` keeps only ``name``, ``type`` and ``markdown`` (the dialect for the
    ``escape_markdown`` filter): channel options hold secrets and never reach a template.
    """
    context: dict[str, Any] = {
        "event": event_view(event),
        "data": event.data,
        # When the message is rendered (UTC): a retry resends the message as first rendered.
        "now": datetime.now(UTC),
        "rule": (
            {
                "name": rule.name,
                "on": list(rule.on),
                "template": rule.template,
                "job": rule.job,
                "channels": list(rule.channels),
            }
            if rule is not None
            else {}
        ),
        "channel": {key: channel[key] for key in ("name", "type", "markdown") if key in channel} if channel else {},
    }
    if events is not None:
        context["events"] = [event_view(item) for item in events]
        context["count"] = len(events)
    return context
