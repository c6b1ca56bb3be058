"""The innermost stage: hand the message to the channel and time it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from router.channels.base import Channel
from router.core.delivery import Delivery
from router.core.message import Outcome
from router.support.deadlines import Deadlines
from router.support.isolation import is_router_cancellation
from router.support.metrics import Metrics

log = logging.getLogger("router.delivery")


class Send:
    """Call ``channel.send``; a channel that raises or hangs yields a retryable outcome."""

    def __init__(self, channel_for: Callable[[str], Channel], metrics: Metrics, timeout: float = 60.0) -> None:
        self.channel_for = channel_for
        self.metrics = metrics
        self.timeout = timeout
        # Checked a few times a second (more often for short limits): no timer per send.
        self._deadlines = Deadlines(resolution=min(0.25, max(0.001, timeout / 20)))

    async def __call__(self, delivery: Delivery) -> Outcome:
        channel = self.channel_for(delivery.channel)
        started = time.perf_counter()
        try:
            async with self._deadlines.limit(self.timeout):
                outcome = await channel.send(delivery.message)
        except TimeoutError:
            outcome = Outcome.retryable(f"channel did not answer within {self.timeout:g}s")
        except BaseException as error:  # a plugin bug (even CancelledError, SystemExit) must not take the router down
            if is_router_cancellation(error):
                raise
            # Only the type: a plugin's exception text may carry its URL or token.
            outcome = Outcome.retryable(f"channel raised {type(error).__name__}")
            log.warning(
                "channel %s raised %s",
                delivery.channel,
                type(error).__name__,
                extra={"fields": {"channel": delivery.channel}},
            )
        self.metrics.delivery_latency.labels(delivery.channel).observe(time.perf_counter() - started)
        return outcome
