"""Run the plugins' ``before_delivery`` and ``delivery_finished`` hooks around a send."""

from __future__ import annotations

from router.channels.base import Outcome
from router.delivery import Delivery
from router.pipeline.chain import Next
from router.plugins import Hooks


class DeliveryHooks:
    """Plugins observe (and may rewrite) each delivery; a failing plugin never stops it."""

    def __init__(self, hooks: Hooks) -> None:
        self.hooks = hooks

    async def __call__(self, delivery: Delivery, next: Next) -> Outcome:
        hooks = self.hooks
        if hooks.has_before_delivery:  # with no implementation, not even a coroutine is made
            await hooks.before_delivery(delivery)
        outcome = await next(delivery)
        if hooks.has_delivery_finished:
            await hooks.delivery_finished(delivery, outcome)
        return outcome
