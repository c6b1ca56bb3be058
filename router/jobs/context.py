"""The :class:`~router.jobs.base.JobContext` a job's ``handle`` receives for one run.

The engine binds the services (rendering, delivering, publishing) to the configuration in
force and the event; the context only holds them, so jobs never see the engine.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from pydantic import BaseModel

from router.config.models import Rule
from router.core.events import MAX_ID_LENGTH, Event
from router.core.message import Message, Outcome
from router.jobs.base import JobState

RenderFn = Callable[[str | None, str | None], Message]
DeliverFn = Callable[[str, Message], Awaitable[Outcome]]
PublishFn = Callable[[str, dict[str, Any], str | None], Awaitable[str]]


class _Store(Protocol):
    """The part of the router's state store (router.state) that :class:`ScopedJobState` uses."""

    async def first_seen(self, key: str, window: float) -> bool: ...

    async def is_sent(self, key: str) -> bool: ...

    async def mark_sent(self, key: str, ttl: float) -> None: ...


class ScopedJobState:
    """:class:`~router.jobs.base.JobState` over the router's store, in the job's own key namespace."""

    def __init__(self, store: _Store, job: str) -> None:
        self._store = store
        self._prefix = f"jobstate:{job}:"

    async def first_seen(self, key: str, window: float) -> bool:
        return await self._store.first_seen(self._prefix + key, window)

    async def is_marked(self, key: str) -> bool:
        return await self._store.is_sent(self._prefix + key)

    async def mark(self, key: str, ttl: float) -> None:
        await self._store.mark_sent(self._prefix + key, ttl)


class RuleJobContext:
    """One job run: the event, the rule, its options and the services bound to them."""

    def __init__(
        self,
        *,
        event: Event,
        rule: Rule,
        options: BaseModel,
        state: ScopedJobState,
        render: RenderFn,
        deliver: DeliverFn,
        publish: PublishFn,
        attempt: int = 1,
        events: tuple[Event, ...] = (),
    ) -> None:
        self.event = event
        self.rule = rule
        self.options = options
        self.state: JobState = state
        self.attempt = attempt
        self.events: Sequence[Event] = events  # a digest's batch (``event`` is then the digest); empty otherwise
        self._render = render
        self._deliver = deliver
        self._publish = publish

    def render(self, channel: str | None = None, template: str | None = None) -> Message:
        """Render the rule's template (or ``template``) as ``channel`` receives it.

        Without ``channel``: as the rule's first channel receives it or, for a rule without
        ``channels:``, as no channel type sees it (title and body, no channel block or limits).
        """
        if channel is None and self.rule.channels:
            channel = self.rule.channels[0]
        return self._render(channel, template)

    async def deliver(self, channel: str, message: Message) -> Outcome:
        """Deliver ``message`` to the configured channel ``channel`` with the router's guarantees."""
        return await self._deliver(channel, message)

    async def publish(self, type: str, data: dict[str, Any], id: str | None = None) -> str:
        """Publish a follow-up event; returns its id.

        Without ``id``, the id is derived from (event id, rule, how many events this run
        published before): a retried job publishes its follow-ups under the same ids, so
        rules that already delivered them skip them.
        """
        if id is not None and not (isinstance(id, str) and 0 < len(id) <= MAX_ID_LENGTH):
            # Refused here, naming the job's rule, rather than dead-lettered as poison when consumed.
            raise ValueError(f"rule '{self.rule.name}': a published event's id must be 1 to {MAX_ID_LENGTH} characters")
        return await self._publish(type, data, id)
