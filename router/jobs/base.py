"""What every job plugin implements: a ``with:`` model and ``async handle(ctx)``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from router.config.models import Rule
    from router.core.events import Event
    from router.core.message import Message, Outcome


class NoOptions(BaseModel):
    """The ``with:`` model of a job that takes no options."""

    model_config = ConfigDict(extra="forbid")


class JobState(Protocol):
    """The state a job may keep: small, stable, and shared by every router on the same store.

    Keys are the job's own: they are kept apart from the router's keys and from other jobs'
    (each job name has its own namespace). Records expire; nothing here is kept forever.
    """

    async def first_seen(self, key: str, window: float) -> bool:
        """True the first time ``key`` is seen; False for ``window`` seconds after that."""
        ...

    async def is_marked(self, key: str) -> bool:
        """True when :meth:`mark` recorded ``key`` and the record has not expired."""
        ...

    async def mark(self, key: str, ttl: float) -> None:
        """Record ``key`` for ``ttl`` seconds; durable once this returns."""
        ...


class JobContext(Protocol):
    """What a job's ``handle`` receives: the event, the rule and the router's services."""

    event: Event
    rule: Rule
    options: BaseModel  # the rule's `with:` block, validated by the job's model
    state: JobState  # the job's own keys in the router's state store
    attempt: int  # 1 for the first run of this job for this event, 2 for its first retry, ...

    @property
    def events(self) -> Sequence[Event]:
        """For a digest rule, the batch being delivered (``event`` is its first); empty otherwise."""
        ...

    def render(self, channel: str | None = None, template: str | None = None) -> Message:
        """Render the rule's template (or ``template``) as ``channel`` would receive it.

        Without ``channel``: as the rule's first channel receives it, or (a rule without
        ``channels:``) as no channel type sees it. An unknown channel raises
        :class:`router.UnknownChannelError`.
        """
        ...

    async def deliver(self, channel: str, message: Message) -> Outcome:
        """Deliver ``message`` to the configured channel ``channel`` with the router's guarantees."""
        ...

    async def publish(self, type: str, data: dict[str, Any], id: str | None = None) -> str:
        """Publish a follow-up event; returns its id (by default stable across retries of this run)."""
        ...


class Job(ABC):
    """Base class of job plugins: background work triggered by a rule."""

    name: ClassVar[str]
    With: ClassVar[type[BaseModel]] = NoOptions

    @abstractmethod
    async def handle(self, ctx: JobContext) -> None:
        """Do the work for one matched event."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook with a no-op default
        """Release resources (connections, pools); called when the configuration is replaced or at shutdown.

        One instance serves every event of a configuration, so open connections lazily and reuse them.
        """
