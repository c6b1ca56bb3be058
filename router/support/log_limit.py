"""One log line per condition per interval, however often the condition repeats.

A failing disk or state store makes every message fail the same way, hundreds of times a
second; a line for each says nothing new and costs CPU and disk. :class:`LogLimiter` lets the
first occurrence of a condition through, then at most one line per ``interval`` seconds that
says how many were left out since the last one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable


class LogLimiter:
    """Decides, per condition key, whether a line goes out now and how many were suppressed."""

    def __init__(self, interval: float = 10.0, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._next: dict[Hashable, float] = {}
        self._suppressed: dict[Hashable, int] = {}

    def allow(self, key: Hashable) -> int | None:
        """None to stay quiet; else the number of occurrences left out since the last line."""
        now = self.clock()
        if now < self._next.get(key, 0.0):
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        if len(self._next) > 1024:  # keys come from error types: few, but never unbounded
            self._next.clear()
            self._suppressed.clear()
        self._next[key] = now + self.interval
        return self._suppressed.pop(key, 0)
