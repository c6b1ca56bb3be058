"""Time limits on sends: a send that hangs ends in TimeoutError soon after its limit, and
nothing else is cancelled."""

from __future__ import annotations

import asyncio
import time

import pytest

from router.support.deadlines import Deadlines


async def hang() -> None:
    await asyncio.Event().wait()


async def test_an_await_past_its_limit_raises_timeout_error_within_the_resolution() -> None:
    deadlines = Deadlines(resolution=0.02)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with deadlines.limit(0.1):
            await hang()
    assert 0.1 <= time.monotonic() - started < 0.1 + 0.02 + 0.2  # limit, resolution, scheduling slack


async def test_awaits_within_their_limit_finish_untouched_and_the_timer_stops() -> None:
    deadlines = Deadlines(resolution=0.01)
    for _ in range(3):
        async with deadlines.limit(5):
            await asyncio.sleep(0)
    async with asyncio.timeout(2):
        while deadlines._timer is not None:  # the timer runs only while something is watched
            await asyncio.sleep(0.01)
    await asyncio.sleep(0)  # no cancellation left pending for this task


async def test_only_the_awaits_past_their_own_limit_are_cancelled() -> None:
    deadlines = Deadlines(resolution=0.01)
    done = asyncio.Event()

    async def watched(limit: float) -> str:
        try:
            async with deadlines.limit(limit):
                await done.wait()
        except TimeoutError:
            return "timed out"
        return "finished"

    short = [asyncio.create_task(watched(0.05)) for _ in range(5)]
    long = [asyncio.create_task(watched(30)) for _ in range(5)]
    assert await asyncio.gather(*short) == ["timed out"] * 5
    done.set()
    assert await asyncio.gather(*long) == ["finished"] * 5


async def test_a_cancel_from_outside_stays_a_cancel() -> None:
    deadlines = Deadlines(resolution=0.01)
    entered = asyncio.Event()

    async def watched() -> None:
        async with deadlines.limit(30):
            entered.set()
            await hang()

    task = asyncio.create_task(watched())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_enclosing_timeout_that_fires_first_keeps_its_own_error() -> None:
    deadlines = Deadlines(resolution=0.01)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05) as outer:
            async with deadlines.limit(30):
                await hang()
    assert outer.expired()


def test_a_resolution_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Deadlines(resolution=0)
