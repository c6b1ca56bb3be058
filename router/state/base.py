"""The state store interface: the router's shared memory, identical over SQLite and Redis.

Every operation is atomic in the backend (one SQLite transaction, one Redis Lua script or
command), so several coroutines, and with Redis several router processes, can call it at once.
Times are seconds as floats; absolute times are wall-clock epoch seconds from the store's clock.
Every key expires: nothing the router writes here lives forever.

Semantics shared by both backends (the contract tests in ``tests/test_state_contract.py``
hold each of them to it):

* idempotency: ``mark_sent(key, ttl)`` records a delivery; ``is_sent`` is true until ``ttl``
  has passed.
* delivery leases: ``claim_delivery(key, owner, lease)`` answers, in one round trip, ``sent``
  when the ledger holds ``key``, else takes a lease on it for ``owner`` (``claimed``) unless
  another owner's lease is live (``held``, with the seconds it has left). ``release_delivery``
  drops the owner's own lease. A lease is not durable: it only keeps two attempts of one
  delivery from sending at the same time; the ledger is what makes a send final. (SQLite keeps
  leases in the process's memory, Redis in Redis: each is as shared as the store itself.)
* dedupe: ``first_seen(key, window)`` is true once, then false until ``window`` seconds after
  that first call (a fixed window from the first sighting; repeats do not extend it).
  ``claim(key, owner, ttl)`` is the same with a name attached: the first owner wins for ``ttl``
  seconds and every caller is told who holds it, so the winner recognises itself (a redelivered
  event is not its own duplicate).
* rate limit (drops excess): a sliding-window log. A call is allowed when fewer than ``limit``
  calls were allowed in the last ``period`` seconds; refused calls are not counted. This is
  exact ("never more than ``limit`` in any ``period``"), costing one entry per allowed call.
* throttle (delays excess, never drops): GCRA. Up to ``burst`` calls (default ``limit``) go at
  once, then one every ``period / limit`` seconds. Each call reserves its slot atomically and
  is told how long to wait for it, so concurrent callers get distinct, ordered slots.
* pacing: ``pace`` is a throttle per channel with ``burst = limit`` that also waits out any
  ``block(channel, until)`` (set when a channel answers 429 with Retry-After). With
  ``max_wait``, a slot further away than that is not reserved (its wait is still returned), so
  a caller that will not wait that long does not push every later sender back.
  ``blocked_for`` tells how long a block has left (a slot reserved before the block ignores it).
* digests: ``digest_add`` opens a bucket on its first item (due ``window`` seconds later) and
  appends; a bucket that reaches ``max_items`` is reported ``full`` and is listed by
  ``digest_due`` at once. Adds past ``max_items`` are still kept (nothing is dropped); the
  caller flushes with ``digest_take``, which removes and returns all items exactly once, or
  with ``digest_peek`` then ``digest_drop``, which removes only the items it read: items added
  in between stay, as a bucket of their own with a fresh window.
  An untaken bucket is kept for ``DIGEST_RETENTION`` seconds past its due time.
* locks: ``acquire_lock`` succeeds when the lock is free, expired, or already held by the
  same owner (which renews it for ``ttl``); ``release_lock`` only releases the owner's own lock.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self

DIGEST_RETENTION = 7 * 86400.0
"""Seconds an untaken digest bucket survives past its due time before it expires."""


@dataclass(frozen=True, slots=True)
class DigestAdd:
    """What :meth:`StateStore.digest_add` reports about the bucket after the add."""

    count: int  # items in the bucket, this one included
    due_at: float  # epoch seconds when the bucket's window closes
    full: bool  # count reached max_items: flush now rather than at due_at


def check_positive(name: str, value: float) -> None:
    """Raise ValueError unless ``value`` (a ttl, window or period) is a positive number of seconds."""
    if not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")


def gcra_slot(tat: float | None, start: float, interval: float, tau: float) -> tuple[float, float]:
    """Reserve one GCRA slot; return ``(slot, new_tat)``, the epoch to send at and the state to store.

    ``tat`` is the stored theoretical arrival time (None when absent), ``start`` the earliest
    moment anything may go (now, or the end of a block), ``interval`` = period / limit and
    ``tau`` = (burst - 1) * interval, the head start a burst may take.
    """
    arrival = start if tat is None or tat < start else tat
    slot = max(arrival - tau, start)
    return slot, arrival + interval


def gcra_params(limit: int, period: float, burst: int | None) -> tuple[float, float]:
    """Return ``(interval, tau)`` for a throttle of ``limit`` per ``period`` with ``burst``; checks them."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    check_positive("period", period)
    size = limit if burst is None else burst
    if size < 1:
        raise ValueError(f"burst must be at least 1, got {size}")
    interval = period / limit
    return interval, (size - 1) * interval


@dataclass(frozen=True, slots=True)
class DeliveryClaim:
    """What :meth:`StateStore.claim_delivery` found: the delivery is sent, leased to the caller, or held."""

    status: Literal["sent", "claimed", "held"]
    wait: float = 0.0  # held: seconds the other attempt's lease has left


SENT_CLAIM = DeliveryClaim("sent")
CLAIMED = DeliveryClaim("claimed")


class StateStore(abc.ABC):
    """Shared state for the router: idempotency, dedupe, rate limits, throttles, pacing, digests, locks."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect (and create the schema); must be called before any other operation."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Finish pending writes and release the connection; safe to call twice."""

    async def ping(self) -> None:
        """Raise if the store cannot be reached (for readiness checks)."""
        await self.is_sent("\x00ping")

    async def purge_expired(self) -> int:
        """Delete expired entries now and return how many; backends with native expiry return 0."""
        return 0

    # idempotency

    @abc.abstractmethod
    async def is_sent(self, key: str) -> bool:
        """True when a delivery with ``key`` was recorded as sent and the record has not expired."""

    @abc.abstractmethod
    async def mark_sent(self, key: str, ttl: float) -> None:
        """Record ``key`` as sent for ``ttl`` seconds; durable once this returns."""

    @abc.abstractmethod
    async def sent_many(self, keys: Sequence[str]) -> set[str]:
        """The subset of ``keys`` recorded as sent (batch form of :meth:`is_sent`)."""

    async def claim_delivery(self, key: str, owner: str, lease: float) -> DeliveryClaim:
        """``sent`` if ``key`` is in the ledger; else lease it to ``owner`` for ``lease`` seconds
        (``claimed``) unless another owner's lease is live (``held``).

        This default takes two round trips and cannot tell how long a lease has left; the
        built-in stores answer in one.
        """
        check_positive("lease", lease)
        if await self.is_sent(key):
            return SENT_CLAIM
        holder = await self.claim(f"lease:{key}", owner, lease)
        return CLAIMED if holder == owner else DeliveryClaim("held", lease)

    async def release_delivery(self, key: str, owner: str) -> None:  # noqa: B027 - a lease also expires
        """Drop ``owner``'s lease on ``key`` (after an attempt that did not send); others' leases stay."""

    # dedupe

    @abc.abstractmethod
    async def first_seen(self, key: str, window: float) -> bool:
        """True the first time ``key`` is seen; False for ``window`` seconds after that."""

    @abc.abstractmethod
    async def claim(self, key: str, owner: str, ttl: float) -> str:
        """Hold ``key`` for ``owner`` for ``ttl`` seconds unless someone holds it; return the holder.

        The holder is ``owner`` when this call won (or ``owner`` already held it); repeats do not
        extend the hold.
        """

    # rate limit

    @abc.abstractmethod
    async def rate_allow(self, key: str, limit: int, period: float) -> bool:
        """True (and counted) when fewer than ``limit`` calls were allowed in the last ``period`` seconds."""

    # throttle and pacing

    @abc.abstractmethod
    async def throttle_reserve(self, key: str, limit: int, period: float, burst: int | None = None) -> float:
        """Reserve the next slot for ``key`` and return the seconds to wait for it (0.0 = go now)."""

    @abc.abstractmethod
    async def pace(self, channel: str, limit: int, period: float, max_wait: float | None = None) -> float:
        """Reserve a send slot on ``channel`` shared by every process; seconds to wait before sending.

        With ``max_wait``, a slot more than ``max_wait`` seconds away is not reserved: the wait
        is returned all the same and the caller must not send.
        """

    @abc.abstractmethod
    async def block(self, channel: str, until: float) -> None:
        """Hold every send on ``channel`` until epoch ``until`` (a later block wins over an earlier one)."""

    @abc.abstractmethod
    async def blocked_for(self, channel: str) -> float:
        """Seconds until the block on ``channel`` ends (0.0 when it is not blocked).

        A slot reserved before a block was set does not wait for it: check this after waiting.
        """

    # digests

    @abc.abstractmethod
    async def digest_add(self, key: str, item: bytes, window: float, max_items: int) -> DigestAdd:
        """Append ``item`` to the digest bucket ``key``, opening it (due in ``window`` seconds) if needed."""

    @abc.abstractmethod
    async def digest_peek(self, key: str, limit: int | None = None) -> list[bytes]:
        """The first ``limit`` (default all) items of bucket ``key`` in add order, without removing them."""

    @abc.abstractmethod
    async def digest_drop(self, key: str, count: int, window: float, max_items: int) -> int:
        """Remove the first ``count`` items of bucket ``key``; return how many remain.

        An emptied bucket is gone. Remaining items (added after a ``digest_peek``) become a bucket
        of their own, due ``window`` seconds from now, or at once when they are ``max_items`` or more.
        """

    @abc.abstractmethod
    async def digest_due(self, now: float) -> list[str]:
        """Keys of buckets whose window closed at or before ``now``, or that are full."""

    @abc.abstractmethod
    async def digest_take(self, key: str) -> list[bytes]:
        """Atomically remove bucket ``key`` and return its items in add order (empty if already taken)."""

    # locks

    @abc.abstractmethod
    async def acquire_lock(self, name: str, owner: str, ttl: float) -> bool:
        """Take (or, for the same owner, renew) lock ``name`` for ``ttl`` seconds; False if someone else holds it."""

    @abc.abstractmethod
    async def release_lock(self, name: str, owner: str) -> None:
        """Release lock ``name`` if ``owner`` holds it; otherwise do nothing."""
