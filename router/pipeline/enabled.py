"""Skip deliveries to channels configured with ``enabled: false``."""

from __future__ import annotations

from collections.abc import Callable

from router.core.delivery import Delivery
from router.core.message import Outcome
from router.pipeline.chain import Next

CHANNEL_DISABLED = "channel disabled"


class SkipDisabled:
    """Disabled channels keep their configuration but receive nothing."""

    def __init__(self, is_enabled: Callable[[str], bool]) -> None:
        self.is_enabled = is_enabled

    async def __call__(self, delivery: Delivery, next: Next) -> Outcome:
        if not self.is_enabled(delivery.channel):
            return Outcome("skipped", CHANNEL_DISABLED)
        return await next(delivery)
