"""Every hook a plugin can implement. Project name ``router``; entry-point group ``router``.

Register-callback hooks (``register_*``) run once when the plugin manager builds its
registry. Event hooks run for each event or delivery; an implementation may be ``async def``,
and a failing implementation is logged with the plugin's name and skipped, never fatal.
docs/plugins.md has a worked example for each hook.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from router.core.delivery import Delivery
    from router.core.events import Event
    from router.core.message import Outcome

hookspec = pluggy.HookspecMarker("router")
hookimpl = pluggy.HookimplMarker("router")


@hookspec
def register_channels(register: Callable[[type[Any]], None]) -> None:
    """Register channel types: call ``register(ChannelClass)`` for each.

    ``ChannelClass`` subclasses :class:`router.Channel`, sets ``type_name`` (what rules.yaml
    writes as ``type:``) and ``Config`` (a pydantic model of its options), and implements
    ``async send(message) -> Outcome``.
    """


@hookspec
def register_jobs(register: Callable[[type[Any]], None]) -> None:
    """Register jobs: call ``register(JobClass)`` for each.

    ``JobClass`` subclasses :class:`router.Job`, sets ``name`` (what a rule writes as
    ``job:``) and ``With`` (a pydantic model of the rule's ``with:`` block), and implements
    ``async handle(ctx)``.
    """


@hookspec
def register_template_filters(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Register Jinja filters: call ``register(name, function)`` for each.

    The filters are available in every template, which runs in Jinja's sandbox.
    """


@hookspec
def event_received(event: Event) -> Event | None:
    """An event was decoded and is about to be matched against the rules.

    Return a new or modified :class:`router.Event` to enrich it (later plugins see the
    result), or ``None`` to leave it as it is. May be ``async def``.
    """


@hookspec
def before_delivery(delivery: Delivery) -> None:
    """A delivery is about to be sent to its channel.

    ``delivery.message`` may be replaced (e.g. to add a footer). May be ``async def``.
    """


@hookspec
def delivery_finished(delivery: Delivery, outcome: Outcome) -> None:
    """A delivery attempt finished with ``outcome`` (sent, retry or failed).

    For observation (audit trails, metrics); may be ``async def``.
    """
