"""Run the plugins' ``before_delivery`` and ``delivery_finished`` hooks around a send."""

from __future__ import annotations

from router.core.delivery import Delivery
from router.core.message import Outcome
from router.pipeline.chain import Next
from router.pipeline.concurrency import DEFER_META
from router.pipeline.pacing import SLOT_META
from router.plugins.manager import Hooks


class DeliveryHooks:
    """Plugins observe (and may rewrite) each delivery; a failing plugin never stops it."""

    def __init__(self, hooks: Hooks) -> None:
        self.hooks = hooks

    async def __call__(self, delivery: Delivery, next: Next) -> Outcome:
        hooks = self.hooks
        # with no implementation, not even a coroutine is made; a delivery coming back from a
        # deferral (pacing, a full channel) carries the message the hooks already changed.
        if hooks.has_before_delivery and not _deferred(delivery):
            await hooks.before_delivery(delivery)
        outcome = await next(delivery)
        if hooks.has_delivery_finished:
            await hooks.delivery_finished(delivery, outcome)
        return outcome


def _deferred(delivery: Delivery) -> bool:
    meta = delivery.message.meta
    return DEFER_META in meta or SLOT_META in meta
