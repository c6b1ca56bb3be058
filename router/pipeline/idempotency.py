"""Skip deliveries already recorded as sent: the effectively-once half of at-least-once."""

from __future__ import annotations

from router.channels.base import Outcome
from router.delivery import Delivery
from router.pipeline.chain import Next
from router.state.base import StateStore

ALREADY_SENT = "already sent"


class SkipIfSent:
    """A delivery whose key is in the sent ledger is not sent again (e.g. after a redelivery)."""

    def __init__(self, state: StateStore) -> None:
        self.state = state

    async def __call__(self, delivery: Delivery, next: Next) -> Outcome:
        if await self.state.is_sent(delivery.key):
            return Outcome("skipped", ALREADY_SENT)
        return await next(delivery)
