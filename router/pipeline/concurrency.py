"""Bound the sends in flight per channel, so one slow channel cannot take every worker."""

from __future__ import annotations

from collections.abc import Mapping

from router.core.delivery import Delivery
from router.core.message import Outcome
from router.pipeline.chain import Next
from router.support.slots import Slots


class ChannelConcurrency:
    """At most ``limits[channel]`` sends to a channel at once; other channels are unaffected."""

    def __init__(self, limits: Mapping[str, int], default: int = 8) -> None:
        self._slots = {name: Slots(limit) for name, limit in limits.items()}
        self._default = default

    async def __call__(self, delivery: Delivery, next: Next) -> Outcome:
        slots = self._slots.get(delivery.channel)
        if slots is None:
            slots = self._slots[delivery.channel] = Slots(self._default)
        async with slots:
            return await next(delivery)
