"""Telling plugin code's ``BaseException``s from the router's own cancellation.

A plugin hook, job or channel may raise ``asyncio.CancelledError``, ``SystemExit``,
``KeyboardInterrupt`` or ``GeneratorExit``. Left to propagate, the first silently ends the task
handling a message (its prefetch slot is never given back) and the others end the process. The
router treats them as it treats ``Exception`` from plugin code, except a ``CancelledError`` while
the current task is itself being cancelled: that one is the router stopping and must go on.
(The router handles SIGINT and SIGTERM itself, so a ``KeyboardInterrupt`` here is a plugin's.)
"""

from __future__ import annotations

import sys


def is_router_cancellation(error: BaseException) -> bool:
    """True when ``error`` must propagate: the running task is being cancelled by the router."""
    # Looked up, not imported: a CancelledError exists only once asyncio is loaded, and importing
    # it here would cost every command's start-up (`router check` runs no event loop).
    asyncio = sys.modules.get("asyncio")
    if asyncio is None or not isinstance(error, asyncio.CancelledError):
        return False
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop: nothing of ours to cancel
        return False
    return task is not None and task.cancelling() > 0
