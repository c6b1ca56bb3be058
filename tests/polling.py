"""The one way tests wait for something: poll a condition with a deadline, never a bare sleep."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable


async def until(
    predicate: Callable[[], object | Awaitable[object]],
    what: str = "the condition",
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
) -> None:
    """Poll ``predicate()`` (sync or async) until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(interval)


def until_sync(predicate: Callable[[], object], what: str = "the condition", *, timeout: float = 10.0) -> None:
    """:func:`until` for code running in a plain thread (no event loop)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.02)
