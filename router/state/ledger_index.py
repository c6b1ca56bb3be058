"""Which keys may be in a SQLite sent ledger, answered from memory.

Before every delivery the router asks whether it was sent already, and almost always it was
not. Answering that from the database costs a read that, under load, follows a commit by the
writer and so starts from a cold page cache (~45 us of CPU per delivery in the intake
benchmark). This index answers "certainly not" from memory for nearly every new key, and
"maybe" for keys that were sent (and for about one in a hundred others), which the database
then settles. It never answers "not sent" for a key the ledger holds, provided every write to
the ledger goes through this process: SQLite state serves one router process (docs/guarantees.md), and
:class:`router.state.sqlite.SqliteStateStore` turns the index off when another process holds
the same database.

The index is a list of Bloom filters, each covering the keys added during one span of time and
dropped once every key in it has expired from the ledger, so memory follows the live ledger
(1.2 to 2.5 bytes per key) instead of growing with uptime.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

_PROBES = 7  # bit positions per key: ~1% false positives at 10 bits per key
_BITS_PER_KEY = 10
_MIN_CAPACITY = 1 << 16
MAX_BYTES = 64 << 20
"""Above this much memory the index turns itself off and every read goes to the database
(a ledger of ~50 million live keys: such a router wants Redis state)."""


class _Filter:
    """One Bloom filter: ``capacity`` keys at ~1% false positives, then it is full."""

    __slots__ = ("bits", "capacity", "count", "expires_at", "mask", "opened_at")

    def __init__(self, capacity: int, opened_at: float) -> None:
        size = 1 << max(10, (capacity * _BITS_PER_KEY - 1).bit_length())  # bits, a power of two
        self.bits = bytearray(size >> 3)
        self.mask = size - 1
        self.capacity = capacity
        self.count = 0
        self.expires_at = 0.0  # when the last key added here leaves the ledger
        self.opened_at = opened_at

    def add(self, hashed: int) -> None:
        bits, mask = self.bits, self.mask
        position, step = hashed & mask, (hashed >> 32) | 1
        for _ in range(_PROBES):
            bits[position >> 3] |= 1 << (position & 7)
            position = (position + step) & mask
        self.count += 1

    def may_contain(self, hashed: int) -> bool:
        bits, mask = self.bits, self.mask
        position, step = hashed & mask, (hashed >> 32) | 1
        for _ in range(_PROBES):
            if not bits[position >> 3] & (1 << (position & 7)):
                return False
            position = (position + step) & mask
        return True


class LedgerIndex:
    """Keys that may be in the ledger. ``ready`` is false until :meth:`finish_loading`: until
    then (and once :attr:`off`) :meth:`may_contain` says "maybe" to everything."""

    def __init__(self, *, rotate_every: float = 3600.0, clock: Callable[[], float] = time.time) -> None:
        self._rotate_every = rotate_every
        self._clock = clock
        self._filters: list[_Filter] = []
        # Adds come from the event loop and, rarely, from another thread (a store used from
        # a second loop); two read-modify-writes of one byte must not lose a bit.
        self._lock = threading.Lock()
        self.ready = False
        self.off = False
        self.why_off = ""

    def __len__(self) -> int:
        return sum(f.count for f in self._filters)

    @property
    def nbytes(self) -> int:
        return sum(len(f.bits) for f in self._filters)

    def may_contain(self, key: str) -> bool:
        """False only when ``key`` is certainly not in the ledger."""
        if not self.ready or self.off:
            return True
        hashed = hash(key)
        return any(f.may_contain(hashed) for f in self._filters)

    def add(self, key: str, expires_at: float) -> None:
        """Record that ``key`` is (or is about to be) in the ledger until ``expires_at``."""
        if self.off:
            return
        hashed = hash(key)
        with self._lock:
            current = self._current(expires_at)
            current.add(hashed)
            if expires_at > current.expires_at:
                current.expires_at = expires_at

    def add_many(self, rows: Iterable[tuple[str, float]]) -> None:
        """:meth:`add` for each ``(key, expires_at)``: the ledger's rows as it is loaded."""
        for key, expires_at in rows:
            self.add(key, expires_at)

    def finish_loading(self) -> None:
        """Every key of the ledger has been added: answer from memory from now on."""
        self.ready = True

    def turn_off(self, why: str) -> None:
        """Answer "maybe" to everything from now on (every read goes to the database)."""
        self.off, self.why_off = True, why
        self._filters = []

    def _current(self, expires_at: float) -> _Filter:
        now = self._clock()
        filters = self._filters
        current = filters[-1] if filters else None
        if current is None or current.count >= current.capacity or now - current.opened_at >= self._rotate_every:
            # Size the next filter for the rate seen so far: one that filled up doubles.
            filled = current is not None and current.count >= current.capacity
            previous = current.count if current is not None else 0
            current = _Filter(max(_MIN_CAPACITY, 2 * previous if filled else previous), now)
            if self.nbytes + len(current.bits) > MAX_BYTES:
                self.turn_off(f"the ledger index would exceed {MAX_BYTES >> 20} MB")
                return current  # written to and dropped: the index is off
            filters.append(current)
        if filters[0].expires_at <= now and filters[0] is not current:
            # Every key of the oldest filters has left the ledger: they can only mislead.
            self._filters = [f for f in filters if f.expires_at > now or f is current]
        return current
