"""``rate_limit: {limit, period, key}``: events beyond ``limit`` per ``period`` are dropped and counted."""

from __future__ import annotations

from router.config.models import RateLimitSpec, Rule
from router.core.durations import format_duration
from router.flow.keys import shown, state_key
from router.state.base import StateStore


async def allows(state: StateStore, rule: Rule, spec: RateLimitSpec, key: str) -> bool:
    """True (and counted) when fewer than ``limit`` events with ``key`` passed in the last ``period``."""
    return await state.rate_allow(state_key("rate", rule, key), spec.limit, spec.period)


def describe(spec: RateLimitSpec, key: str) -> str:
    return (
        f"rate_limit: {shown(key)}: at most {spec.limit} per {format_duration(spec.period)}; "
        "events beyond that are dropped and counted"
    )
