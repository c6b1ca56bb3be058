"""The :class:`~router.jobs.base.JobContext` a job's ``handle`` receives for one run.

The engine binds the services (rendering, delivering, publishing) to the configuration in
force and the event; the context only holds them, so jobs never see the engine.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from pydantic import BaseModel

from router.config.models import Rule
from router.core.errors import TemplateError
from router.core.events import Event
from router.core.message import Message, Outcome

RenderFn = Callable[[str, str | None], Message]
DeliverFn = Callable[[str, Message], Awaitable[Outcome]]
PublishFn = Callable[[str, dict[str, Any]], Awaitable[str]]


class RuleJobContext:
    """One job run: the event, the rule, its options and the services bound to them."""

    def __init__(
        self,
        *,
        event: Event,
        rule: Rule,
        options: BaseModel,
        state: Any,
        render: RenderFn,
        deliver: DeliverFn,
        publish: PublishFn,
        attempt: int = 1,
        events: tuple[Event, ...] = (),
    ) -> None:
        self.event = event
        self.rule = rule
        self.options = options
        self.state = state
        self.attempt = attempt
        self.events: Sequence[Event] = events  # a digest's batch (``event`` is then the digest); empty otherwise
        self._render = render
        self._deliver = deliver
        self._publish = publish

    def render(self, channel: str | None = None, template: str | None = None) -> Message:
        """Render the rule's template (or ``template``) as ``channel`` (default: the rule's first) receives it."""
        if channel is None:
            if not self.rule.channels:
                raise TemplateError(f"rule '{self.rule.name}' has no channel to render for")
            channel = self.rule.channels[0]
        return self._render(channel, template)

    async def deliver(self, channel: str, message: Message) -> Outcome:
        """Deliver ``message`` to the configured channel ``channel`` with the router's guarantees."""
        return await self._deliver(channel, message)

    async def publish(self, type: str, data: dict[str, Any]) -> str:
        """Publish a follow-up event; returns its id."""
        return await self._publish(type, data)
