"""``throttle: {limit, period, key, burst}``: events beyond the rate are delayed, never dropped.

Each event reserves the next slot of its key (GCRA in the state store, so slots are distinct
and ordered across processes) and runs at that slot: a short wait in the process, a longer one
as a durable record in the transport that comes back shortly before the slot.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from router.config.models import Rule, ThrottleSpec
from router.core.durations import format_duration
from router.flow.keys import shown, state_key
from router.pipeline.hops import HOLD as HOLD  # re-exported: FlowControl reads throttle.HOLD
from router.pipeline.hops import hop_delay as hop_delay
from router.state.base import StateStore


class KeyedLocks:
    """An asyncio lock per key, forgotten once nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


async def reserve(state: StateStore, rule: Rule, spec: ThrottleSpec, key: str, locks: KeyedLocks) -> float:
    """Reserve the next slot for ``key``; seconds until it (0.0: run now).

    Reservations of one key are made one at a time, in the order events reach this point (the
    order they arrived in): concurrent calls on several store connections could overtake each
    other, and slots are handed out in reservation order.
    """
    name = state_key("throttle", rule, key)
    async with locks.hold(name):
        return await state.throttle_reserve(name, spec.limit, spec.period, spec.burst)


def describe(spec: ThrottleSpec, key: str) -> str:
    burst = spec.burst if spec.burst is not None else spec.limit
    return (
        f"throttle: {shown(key)}: {spec.limit} per {format_duration(spec.period)} (burst {burst}); "
        "events beyond that are delayed, in order, never dropped"
    )
