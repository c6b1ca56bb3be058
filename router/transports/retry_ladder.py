"""The fixed ladder of retry delays behind RabbitMQ's delay queues.

RabbitMQ only expires messages from the head of a queue, so one queue holding messages with
different per-message TTLs would let a long delay at the head hold back shorter ones behind
it. Instead every delay queue has a single queue-wide TTL, and a requested delay is rounded
*up* to the nearest step of a geometric ladder: a retry never comes back earlier than asked,
at most ``RATIO`` times later, and the number of delay queues stays bounded (about 60).
"""

from __future__ import annotations

from bisect import bisect_left

MIN_MS = 100
"""The shortest step: delays up to 100 ms all wait 100 ms."""
MAX_MS = 24 * 3600 * 1000
"""The longest step (24 h); longer delays are chained through it."""
RATIO = 1.25
"""Growth between consecutive steps: the most a delay is ever stretched."""


def _build() -> tuple[int, ...]:
    steps: list[int] = []
    value = float(MIN_MS)
    while value < MAX_MS:
        step = round(value)
        if not steps or step > steps[-1]:
            steps.append(step)
        value *= RATIO
    steps.append(MAX_MS)
    return tuple(steps)


LADDER: tuple[int, ...] = _build()
"""Every step, in milliseconds, ascending."""


def step_for(delay: float) -> int | None:
    """The smallest step (ms) that is at least ``delay`` seconds, or None above :data:`MAX_MS`."""
    # Round away float noise (0.3 * 1000 == 300.00000000000006) before comparing.
    wanted = round(max(delay, 0.0) * 1000, 6)
    index = bisect_left(LADDER, wanted)
    return LADDER[index] if index < len(LADDER) else None
