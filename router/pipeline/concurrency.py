"""Bound the sends in flight per channel, so one slow channel cannot take every worker."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from router.channels.base import Outcome
from router.delivery import Delivery
from router.pipeline.chain import Next


class ChannelConcurrency:
    """At most ``limits[channel]`` sends to a channel at once; other channels are unaffected."""

    def __init__(self, limits: Mapping[str, int], default: int = 8) -> None:
        self._semaphores = {name: asyncio.Semaphore(limit) for name, limit in limits.items()}
        self._default = default

    async def __call__(self, delivery: Delivery, next: Next) -> Outcome:
        semaphore = self._semaphores.get(delivery.channel)
        if semaphore is None:
            semaphore = self._semaphores[delivery.channel] = asyncio.Semaphore(self._default)
        async with semaphore:
            return await next(delivery)
