"""Skip deliveries already recorded as sent, and keep two attempts of one delivery from overlapping.

The sent ledger is the effectively-once half of at-least-once: a delivery recorded as sent is
never sent again. What the ledger cannot cover is an attempt still in flight when the same
delivery starts again (the broker redelivered the event after a lost connection, or a retry
came due while a redelivered event was sending it). So before sending, an attempt takes a
short lease on the delivery key in the same state-store round trip that reads the ledger; an
attempt that finds another's live lease waits for that attempt to finish (and then skips, if
it sent) instead of sending at the same time. Leases are released when an attempt did not
send, and otherwise simply expire.

Every message that goes on also carries ``meta["idempotency_key"]``: a digest of the delivery
key, the same on every retry and redelivery, which channels pass to receivers that can drop a
repeat (the webhook channel sends it as the ``Idempotency-Key`` header).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
import time
import uuid
from dataclasses import replace

from router.core.delivery import Delivery
from router.core.message import Message, Outcome
from router.pipeline.chain import Next
from router.state.base import DeliveryClaim, StateStore

ALREADY_SENT = "already sent"
IN_FLIGHT = "another attempt of this delivery is still in flight"
IDEMPOTENCY_META = "idempotency_key"

DEFAULT_LEASE = 15.0


def _lease_from_env() -> float:
    raw = os.environ.get("ROUTER_DELIVERY_LEASE", "")
    try:
        value = float(raw) if raw else DEFAULT_LEASE
    except ValueError:
        raise ValueError(f"ROUTER_DELIVERY_LEASE must be a number of seconds, got {raw!r}") from None
    return value if value >= 0 else DEFAULT_LEASE


DELIVERY_LEASE = _lease_from_env()
"""Seconds an attempt holds its delivery's lease ($ROUTER_DELIVERY_LEASE, default 15; 0 turns
leases off): longer than a send normally takes (the webhook's default timeout is 10 s). With
Redis state, a redelivery after a crash waits at most this long for the dead attempt's lease
(SQLite keeps leases in the process's memory: they die with it)."""

_FIRST_POLL = 0.05
_MAX_POLL = 1.0

_process = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
_attempts = itertools.count()


def idempotency_key(delivery_key: str) -> str:
    """The receiver-facing key of a delivery: 32 hex digits of SHA-256 over ``event key:rule:channel``
    (the event key is its source and id: :attr:`router.core.events.Event.key`)."""
    return hashlib.sha256(delivery_key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def with_idempotency_key(message: Message, key: str) -> Message:
    """``message`` with ``key`` in its meta (unchanged when it already carries it)."""
    if message.meta.get(IDEMPOTENCY_META) == key:
        return message
    # replace(): every other field of the message (a rich payload, ...) goes through unchanged.
    return replace(message, meta={**message.meta, IDEMPOTENCY_META: key})


class SkipIfSent:
    """A delivery whose key is in the sent ledger is not sent again, nor while another attempt holds it."""

    def __init__(self, state: StateStore, *, lease: float = DELIVERY_LEASE, max_wait: float | None = None) -> None:
        self.state = state
        self.lease = lease
        # Past this, give up waiting and let the retry machinery try later (a held lease is renewed
        # only by a new attempt, so this is reached only when attempts keep overlapping).
        self.max_wait = 2 * lease if max_wait is None else max_wait

    async def __call__(self, delivery: Delivery, next: Next) -> Outcome:
        key = delivery.key
        if self.lease <= 0:
            return await self._ledger_only(delivery, next)
        owner = f"{_process}-{next_attempt()}"
        claim = await self.state.claim_delivery(key, owner, self.lease)
        if claim.status == "held":
            claim = await self._wait(key, owner, claim)
        if claim.status == "sent":
            return Outcome("skipped", ALREADY_SENT)
        if claim.status == "held":
            return Outcome.retryable(IN_FLIGHT, retry_after=claim.wait)
        delivery.message = with_idempotency_key(delivery.message, idempotency_key(key))
        try:
            outcome = await next(delivery)
        except BaseException:
            await self._release(key, owner)
            raise
        if outcome.status != "sent":
            # Let a retry or a redelivery go at once instead of waiting out the lease. A sent
            # delivery keeps its lease until it expires: the ledger answers first from now on.
            await self._release(key, owner)
        return outcome

    async def _ledger_only(self, delivery: Delivery, next: Next) -> Outcome:
        key = delivery.key
        if await self.state.is_sent(key):
            return Outcome("skipped", ALREADY_SENT)
        delivery.message = with_idempotency_key(delivery.message, idempotency_key(key))
        return await next(delivery)

    async def _wait(self, key: str, owner: str, claim: DeliveryClaim) -> DeliveryClaim:
        """Poll until the other attempt sent (``sent``), gave up or died (``claimed``), or ``max_wait``."""
        deadline = time.monotonic() + self.max_wait
        poll = _FIRST_POLL
        while claim.status == "held":
            left = deadline - time.monotonic()
            if left <= 0:
                return claim
            await asyncio.sleep(min(poll, max(claim.wait, 0.001), left))
            poll = min(poll * 2, _MAX_POLL)
            claim = await self.state.claim_delivery(key, owner, self.lease)
        return claim

    async def _release(self, key: str, owner: str) -> None:
        # Best effort: if the store is unreachable the lease expires on its own.
        with contextlib.suppress(Exception):
            await self.state.release_delivery(key, owner)


def next_attempt() -> int:
    """A number unique to each attempt within this process (with the process tag, unique everywhere)."""
    return next(_attempts)
