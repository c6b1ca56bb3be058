"""``dedupe: {key, window}``: an event whose key was already seen within the window is skipped."""

from __future__ import annotations

from router.config.models import DedupeSpec, Rule
from router.core.durations import format_duration
from router.core.events import Event
from router.flow.keys import shown, state_key
from router.state.base import StateStore


async def is_first(state: StateStore, rule: Rule, spec: DedupeSpec, key: str, event: Event) -> bool:
    """True when ``event`` is the first with ``key`` in the window, or is that first event again.

    The key is claimed in the event's name, so a redelivery of the event that claimed it (after
    a crash before its acknowledgement) is not taken for its own duplicate and dropped.
    """
    holder = await state.claim(state_key("dedupe", rule, key), event.key, spec.window)
    return holder == event.key


def describe(spec: DedupeSpec, key: str) -> str:
    return (
        f"dedupe: {shown(key)}: skipped if another event with this key was seen in the last "
        f"{format_duration(spec.window)}"
    )
