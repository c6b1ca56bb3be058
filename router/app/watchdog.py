"""Noticing a consumer that stopped making progress while messages wait.

A handler that never settles its message holds one of the ``broker.prefetch`` slots for good;
when every slot is held, nothing more is consumed although the process looks healthy. The
watchdog compares the engine's last progress (a message started or finished) with the queue's
depth: messages waiting and no progress for ``stall_after`` seconds make ``/readyz`` answer 503
(so an orchestrator can restart the process: unsettled messages are then redelivered) and log
why, once per stall; progress again clears it, with a log line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("router.watchdog")

STALL_ENV = "ROUTER_STALL_SECONDS"
DEFAULT_STALL_AFTER = 120.0


def stall_after_from_env() -> float:
    """``$ROUTER_STALL_SECONDS`` (positive number), else 120 s."""
    raw = os.environ.get(STALL_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_STALL_AFTER
    except ValueError:
        log.warning("%s=%r is not a number; using %g s", STALL_ENV, raw, DEFAULT_STALL_AFTER)
        return DEFAULT_STALL_AFTER
    return value if value > 0 else DEFAULT_STALL_AFTER


class Watchdog:
    """Polls ``depth()`` every ``interval`` seconds; ``stalled`` while messages wait without progress."""

    def __init__(
        self,
        *,
        last_progress: Callable[[], float],
        in_flight: Callable[[], int],
        depth: Callable[[], Awaitable[int | None]],
        stall_after: float,
        interval: float | None = None,
    ) -> None:
        self.last_progress = last_progress
        self.in_flight = in_flight
        self.depth = depth
        self.stall_after = stall_after
        self.interval = interval if interval is not None else min(5.0, max(0.1, stall_after / 4))
        self.stalled = False

    async def check(self) -> bool:
        """Look once; returns ``stalled``."""
        idle_for = time.monotonic() - self.last_progress()
        if idle_for < self.stall_after:
            if self.stalled:
                log.warning("consumer making progress again; /readyz answers 200")
                self.stalled = False
            return False
        waiting = await self.depth()
        if waiting:
            if not self.stalled:
                log.error(
                    "consumer stalled: %d messages waiting, none started or finished for %.0f s"
                    " (%d handlers still running); /readyz answers 503",
                    waiting,
                    idle_for,
                    self.in_flight(),
                    extra={"fields": {"waiting": waiting, "idle_seconds": round(idle_for, 1)}},
                )
            self.stalled = True
        elif waiting == 0 and self.stalled:
            log.warning("no message waiting any more; /readyz answers 200")
            self.stalled = False
        return self.stalled

    async def run(self) -> None:
        """Check until cancelled; a failing check is logged, never fatal."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception as error:
                log.debug("watchdog check failed: %s", type(error).__name__)
