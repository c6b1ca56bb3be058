"""Time limits on awaits, for a hot path: one timer for every watched await instead of one each.

``asyncio.timeout`` schedules a timer on entry and cancels it on exit: a timer handle and a
heap push per send, about 2% of the router's CPU per event. A send's time limit (60 s by
default) needs no millisecond precision, so :class:`Deadlines` keeps the awaits it watches in a
set and checks them every ``resolution`` seconds with a single timer, which runs only while
something is watched. An await that outlives its limit is cancelled and raises TimeoutError
in its task, exactly as ``asyncio.timeout`` does, at most ``resolution`` seconds late.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class _Watch:
    __slots__ = ("cancelling", "deadline", "expired", "task")

    def __init__(self, task: asyncio.Task[object], deadline: float) -> None:
        self.task = task
        self.deadline = deadline
        self.expired = False
        self.cancelling = task.cancelling()


class _Scope:
    """``async with deadlines.limit(seconds):`` the block raises TimeoutError past its limit."""

    __slots__ = ("_deadlines", "_seconds", "_watch")

    def __init__(self, deadlines: Deadlines, seconds: float) -> None:
        self._deadlines = deadlines
        self._seconds = seconds
        self._watch: _Watch | None = None

    async def __aenter__(self) -> None:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Deadlines.limit() must be used inside a task")
        self._watch = self._deadlines._add(task, self._seconds)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        watch = self._watch
        assert watch is not None
        self._deadlines._watches.discard(watch)
        # As asyncio.timeout: only a cancellation we caused, and nobody else asked for, becomes
        # a TimeoutError; an outside cancel() that arrives at the same time stays a cancel.
        if watch.expired and watch.task.uncancel() <= watch.cancelling and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc


class Deadlines:
    """Cancel the watched awaits that outlive their limit, checked every ``resolution`` seconds."""

    def __init__(self, resolution: float = 0.25) -> None:
        if not resolution > 0:
            raise ValueError(f"resolution must be a positive number of seconds, got {resolution!r}")
        self.resolution = resolution
        self._watches: set[_Watch] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop the timer runs on

    def limit(self, seconds: float) -> _Scope:
        """An async context manager: its block raises TimeoutError once ``seconds`` have passed."""
        return _Scope(self, seconds)

    def _add(self, task: asyncio.Task[object], seconds: float) -> _Watch:
        loop = task.get_loop()
        if loop is not self._loop:
            # First use, or used from a new loop (the old one is gone): start afresh on this one.
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._loop = None, loop
            self._watches = {w for w in self._watches if w.task.get_loop() is loop}
        watch = _Watch(task, loop.time() + seconds)
        self._watches.add(watch)
        if self._timer is None:
            self._timer = loop.call_later(self.resolution, self._sweep, loop)
        return watch

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = loop.time()
        for watch in [w for w in self._watches if w.deadline <= now and not w.expired]:
            watch.expired = True
            watch.task.cancel()
        if self._watches:
            self._timer = loop.call_later(self.resolution, self._sweep, loop)
