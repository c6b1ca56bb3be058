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


class JobContext(Protocol):
    """What a job's ``handle`` receives: the event, the rule and the router's services."""

    event: Event
    rule: Rule
    options: BaseModel  # the rule's `with:` block, validated by the job's model
    state: Any  # the state store (router.state); None where no store is running

    @property
    def events(self) -> Sequence[Event]:
        """For a digest rule, the batch being delivered (``event`` is its first); empty otherwise."""
        ...

    def render(self, channel: str | None = None, template: str | None = None) -> Message:
        """Render the rule's template (or ``template``) as ``channel`` would receive it."""
        ...

    async def deliver(self, channel: str, message: Message) -> Outcome:
        """Deliver ``message`` to the configured channel ``channel`` with the router's guarantees."""
        ...

    async def publish(self, type: str, data: dict[str, Any]) -> str:
        """Publish a follow-up event; returns its id."""
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
