"""How long a failed delivery waits before its next attempt."""

from __future__ import annotations

import random

from router.config.models import RetryPolicy

_RANDOM = random.Random()


def retry_delay(
    policy: RetryPolicy, attempt: int, retry_after: float | None = None, rand: random.Random | None = None
) -> float:
    """Delay before attempt ``attempt + 1`` after attempt ``attempt`` (1-based) failed.

    Exponential (``backoff * 2**(attempt-1)``) capped at ``max_backoff``, spread by +/- ``jitter``
    so that a burst of failures does not retry in lockstep. A provider's Retry-After is a floor:
    never retry earlier than the provider asked, even when it exceeds the cap.
    """
    rng = rand if rand is not None else _RANDOM
    base = min(policy.backoff * (2.0 ** max(attempt - 1, 0)), policy.max_backoff)
    if policy.jitter:
        base *= 1 + rng.uniform(-policy.jitter, policy.jitter)
    base = min(base, policy.max_backoff)
    if retry_after is not None:
        base = max(base, retry_after)
    return max(base, 0.0)
