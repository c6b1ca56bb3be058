"""How long a delayed record waits per hop through the transport (throttled jobs, paced sends).

A wait up to :data:`HOLD` happens in the process; a longer one becomes a durable record that
the transport hands back shortly before its slot, possibly in several hops.
"""

from __future__ import annotations

HOLD = 1.0
"""Seconds a throttled job or a paced send may wait in the process; longer waits are durable records."""

_STRETCH = 0.75
"""A transport may deliver a record late by up to 25% of its delay (RabbitMQ's delay ladder):
asking for 75% of the wait brings it back before the slot, never after."""


def hop_delay(remaining: float, hold: float = HOLD) -> float:
    """The delay to schedule a record with so that it returns before its slot, and near it.

    The record then waits the rest in the process (when within ``hold``) or hops again; each
    hop leaves at most a quarter of the wait, so even a day takes only a handful of hops.
    """
    return max(min(remaining - hold / 2, remaining * _STRETCH), 0.0)
