"""The SQLite state store: the single-process default.

One connection lives on one dedicated worker thread, so the event loop never waits on disk and
there is exactly one writer. Calls are queued to that thread, which drains whatever has queued
up and runs it as one transaction (group commit): under load, many ``mark_sent`` calls share a
single fsync, yet none returns before its transaction has committed. Each call runs inside its
own savepoint, so one failing call does not undo its neighbours.

The database is in WAL mode with ``synchronous=FULL``: a committed write survives a crash of the
process or of the machine. Expired rows are purged every ``purge_interval`` seconds by the
worker itself, between batches.

``is_sent`` (asked before every delivery) is answered on the event loop: "no" for nearly every
new key by :class:`~router.state.ledger_index.LedgerIndex`, an in-memory filter over the
ledger's keys loaded at open (until it is loaded, and for keys it cannot rule out, the
database answers). The database is read on the loop too, through a second, read-only
connection: in WAL mode a reader never waits for the writer, so a read neither crosses threads
nor queues behind a commit's fsync. What that reader cannot see yet (``mark_sent`` calls
waiting for their commit) is answered from memory. ``mark_sent`` calls made in one pass of the
event loop go to the worker as one statement (an insert from a JSON array of the rows). A
``:memory:`` database has no second connection and reads on the worker.

The index assumes this process is the only writer of the ledger, as docs/guarantees.md has it for
SQLite state: a lock file beside the database (``<db>.lock``) tells, and while another process
holds it the index is off and every read goes to the database.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from router.state.base import (
    CLAIMED,
    DIGEST_RETENTION,
    SENT_CLAIM,
    DeliveryClaim,
    DigestAdd,
    StateStore,
    check_positive,
    gcra_params,
    gcra_slot,
)
from router.state.ledger_index import LedgerIndex
from router.support.sqlite_worker import SqliteWorker

T = TypeVar("T")

log = logging.getLogger(__name__)

_LEASES: dict[str, dict[str, tuple[str, float]]] = {}
"""Delivery leases by database path: key -> (owner, expires_at)."""
_LEASE_SWEEP_AT = 10_000  # entries before expired ones are swept (sent deliveries drop theirs at once)

_INDEX_PAGE = 20_000  # ledger keys per query while the index loads
# Added to a key's expiry in the index: the worker stamps the row a little later than the loop.
_INDEX_EXPIRY_MARGIN = 60.0


@dataclass
class _SharedIndex:
    """The ledger index of one database, shared by the stores of this process that use it."""

    index: LedgerIndex
    users: int = 0
    lock_file: int | None = None  # the descriptor holding <db>.lock
    loader: asyncio.Task[None] | None = None


_INDEXES: dict[str, _SharedIndex] = {}

_READER_BUSY_TIMEOUT = 0.05  # seconds the loop's reader may wait on a lock before asking the worker
_SELECT_SENT = "SELECT 1 FROM sent WHERE key = ? AND expires_at > ?"
_UPSERT_SENT = (
    "INSERT INTO sent(key, expires_at) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET expires_at = excluded.expires_at"
)
# A batch of marks as one statement over a JSON array of [key, expires_at]: executemany steps
# the statement once per row, releasing and taking back the GIL each time, and every take-back
# can stall the event loop's thread for a switch interval.
_UPSERT_SENT_JSON = (
    "INSERT INTO sent(key, expires_at) SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]')"
    " FROM json_each(?) WHERE true ON CONFLICT(key) DO UPDATE SET expires_at = excluded.expires_at"
)
_MAX_BATCH = 512  # calls per transaction; bounds how long one commit holds the write lock
_IN_CHUNK = 500  # keys per IN (...) query, below SQLite's variable limit

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sent (key TEXT PRIMARY KEY, expires_at REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sent_expiry ON sent(expires_at);
CREATE TABLE IF NOT EXISTS seen (key TEXT PRIMARY KEY, expires_at REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_expiry ON seen(expires_at);
CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS claims_expiry ON claims(expires_at);
CREATE TABLE IF NOT EXISTS rate_hits (
    id INTEGER PRIMARY KEY, key TEXT NOT NULL, at REAL NOT NULL, expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS rate_hits_key ON rate_hits(key, at);
CREATE INDEX IF NOT EXISTS rate_hits_expiry ON rate_hits(expires_at);
CREATE TABLE IF NOT EXISTS gcra (key TEXT PRIMARY KEY, tat REAL NOT NULL, expires_at REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blocks (channel TEXT PRIMARY KEY, until REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS digests (
    key TEXT PRIMARY KEY,
    due_at REAL NOT NULL,
    listed_at REAL NOT NULL,  -- when digest_due lists it: due_at, or earlier once full
    count INTEGER NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS digests_listed ON digests(listed_at);
CREATE TABLE IF NOT EXISTS digest_items (id INTEGER PRIMARY KEY, key TEXT NOT NULL, item BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS digest_items_key ON digest_items(key, id);
CREATE TABLE IF NOT EXISTS locks (name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL) WITHOUT ROWID;
"""

_PURGE = (
    "DELETE FROM sent WHERE expires_at <= :now",
    "DELETE FROM seen WHERE expires_at <= :now",
    "DELETE FROM claims WHERE expires_at <= :now",
    "DELETE FROM rate_hits WHERE expires_at <= :now",
    "DELETE FROM gcra WHERE expires_at <= :now",
    "DELETE FROM blocks WHERE until <= :now",
    "DELETE FROM locks WHERE expires_at <= :now",
    "DELETE FROM digest_items WHERE key IN (SELECT key FROM digests WHERE expires_at <= :now)",
    "DELETE FROM digests WHERE expires_at <= :now",
)

# An operation runs on the worker thread with the connection and the store clock's "now".
_Op = Callable[[sqlite3.Connection, float], T]


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():  # cancelled, or a read already answered before its batch failed
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def _settle_all(settled: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in settled:
        _settle(future, ok, value)


def _settle_group(futures: list[asyncio.Future[Any]], group: asyncio.Future[Any]) -> None:
    """Settle each of ``futures`` as the call they share settled."""
    if group.cancelled():
        for future in futures:
            future.cancel()
        return
    error = group.exception()
    _settle_all([(future, error is None, error) for future in futures])


def sqlite_path_from_url(url: str) -> str:
    """Map ``sqlite:///rel.db`` (relative to cwd), ``sqlite:////abs.db`` or ``sqlite:///:memory:`` to a path."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ValueError(
            "a SQLite state URL looks like sqlite:///relative.db, sqlite:////abs/path.db or sqlite:///:memory:"
        )
    rest = url[len(prefix) :]
    if rest == ":memory:":
        return rest
    # Resolve now, so a later chdir does not move the database.
    return str(Path(rest).absolute()) if not rest.startswith("/") else rest


class SqliteStateStore(StateStore):
    """State in one SQLite file (or ``:memory:``), served by one dedicated worker thread."""

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Callable[[], float] = time.time,
        purge_interval: float = 60.0,
    ) -> None:
        self.path = str(path)
        self._clock = clock
        self._purge_interval = purge_interval
        self._last_purge = clock()
        self._worker = SqliteWorker(
            connect=self._connect,
            name="router-state-sqlite",
            max_batch=_MAX_BATCH,
            closed_error=lambda: RuntimeError("the state store is not open; call open() first"),
            between_batches=self._purge_when_due,
        )
        # Delivery leases live in this process's memory, shared by every store on the same file:
        # a SQLite store serves one process, and a lease must die with the process that held it
        # (a restarted router then waits for nothing). Not written to disk: no cost per send.
        shared = self.path if self.path != ":memory:" else f":memory:{id(self)}"
        self._leases = _LEASES.setdefault(shared, {})
        self._lease_sweep_at = _LEASE_SWEEP_AT
        self._reader: sqlite3.Connection | None = None  # the loop's read-only connection
        # mark_sent calls of this pass of the loop, sent to the worker together when it ends.
        self._marks: list[tuple[str, float, asyncio.Future[None]]] | None = None
        # Keys whose mark_sent has not committed yet (with how many calls are marking each):
        # sent, though the reader cannot see it yet.
        self._marking: dict[str, int] = {}
        self._json_rows = False  # set by the worker once it knows SQLite has json_each
        self._index_key = shared
        self._index = LedgerIndex(clock=clock)  # replaced by the shared one at open

    def __repr__(self) -> str:
        return f"SqliteStateStore({self.path!r})"

    # lifecycle

    async def open(self) -> None:
        if self._worker.running:
            return
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._last_purge = self._clock()
        await self._worker.start()
        if self.path != ":memory:":
            self._reader = self._open_reader()
        self._attach_index()

    def _attach_index(self) -> None:
        shared = _INDEXES.get(self._index_key)
        if shared is None:
            shared = _INDEXES[self._index_key] = _SharedIndex(LedgerIndex(clock=self._clock))
            if self.path == ":memory:":
                shared.index.finish_loading()  # a new database: nothing to load
            else:
                shared.lock_file = self._lock_database(shared.index)
                if not shared.index.off:
                    shared.loader = asyncio.create_task(self._load_index(shared.index))
        shared.users += 1
        self._index = shared.index

    def _lock_database(self, index: LedgerIndex) -> int | None:
        """Take ``<db>.lock``; if another process holds it, turn the index off (and say so)."""
        try:
            fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            index.turn_off(f"cannot open {self.path}.lock ({exc.strerror})")
            log.warning("SQLite state: %s; every delivery reads the database", index.why_off)
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            index.turn_off(f"another process uses {self.path}")
            log.warning(
                "SQLite state: %s. SQLite state serves one router process: give each its own "
                "state URL, or use Redis state to share the work",
                index.why_off,
            )
            return None
        return fd

    async def _load_index(self, index: LedgerIndex) -> None:
        """Add every live key of the ledger to the index, a page at a time, then switch it on."""
        after = ""
        while True:

            def page(conn: sqlite3.Connection, now: float, after: str = after) -> list[tuple[str, float]]:
                return conn.execute(
                    "SELECT key, expires_at FROM sent WHERE key > ? AND expires_at > ? ORDER BY key LIMIT ?",
                    (after, now, _INDEX_PAGE),
                ).fetchall()

            try:
                rows = await self._call(page)
            except Exception as exc:  # a failing disk, or the store that loads it closed
                index.turn_off(f"loading it failed ({type(exc).__name__}: {exc})")
                log.warning("SQLite state: the ledger index is off: %s", index.why_off)
                return
            index.add_many((key, expires_at + _INDEX_EXPIRY_MARGIN) for key, expires_at in rows)
            if len(rows) < _INDEX_PAGE:
                index.finish_loading()
                log.debug("SQLite state: ledger index loaded (%d keys, %d bytes)", len(index), index.nbytes)
                return
            after = rows[-1][0]

    async def _detach_index(self) -> None:
        shared = _INDEXES.get(self._index_key)
        if shared is None or shared.index is not self._index:
            return
        shared.users -= 1
        if shared.users > 0:
            return
        del _INDEXES[self._index_key]
        if shared.loader is not None:
            shared.loader.cancel()
            await asyncio.gather(shared.loader, return_exceptions=True)
        if shared.lock_file is not None:
            os.close(shared.lock_file)  # releases the lock

    def _open_reader(self) -> sqlite3.Connection | None:
        # Opened after the worker created the schema and switched the file to WAL.
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=_READER_BUSY_TIMEOUT)
        except sqlite3.Error as exc:
            log.debug("no read-only connection to %s (%s); reads go through the worker", self.path, exc)
            return None
        try:
            conn.execute("PRAGMA query_only=ON")
        except sqlite3.Error as exc:
            log.debug("no read-only connection to %s (%s); reads go through the worker", self.path, exc)
            conn.close()
            return None
        return conn

    async def close(self) -> None:
        if not self._worker.running:
            return
        self._flush_marks()  # marks made in this pass go ahead of the stop
        await self._detach_index()
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        await self._worker.stop()  # after every pending call, so those finish first

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=10.0)
        try:
            try:
                conn.execute("SELECT json_extract(value, '$[0]') FROM json_each('[[1]]')").fetchall()
                self._json_rows = True
            except sqlite3.OperationalError:  # an SQLite built without its JSON functions
                self._json_rows = False
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        return conn

    def _purge_when_due(self, conn: sqlite3.Connection) -> None:
        now = self._clock()
        if now - self._last_purge >= self._purge_interval:
            self._last_purge = now
            self._purge(conn, now)

    def _purge(self, conn: sqlite3.Connection, now: float) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            for statement in _PURGE:
                conn.execute(statement, {"now": now})
            conn.execute("COMMIT")
        except sqlite3.Error:
            # A failed purge only delays cleanup; it must not stop the worker serving calls.
            log.warning("purging expired state failed; will retry", exc_info=True)
            if conn.in_transaction:
                conn.execute("ROLLBACK")

    async def _call(self, op: _Op[T], *, single: bool = False, read: bool = False) -> T:
        """Run ``op`` in the worker's next transaction; ``single``: it runs exactly one SQL
        statement; ``read``: a single statement that writes nothing (answered before the commit)."""
        clock = self._clock
        return await self._worker.call(lambda conn: op(conn, clock()), single=single, read=read)

    async def purge_expired(self) -> int:
        def op(conn: sqlite3.Connection, now: float) -> int:
            return sum(conn.execute(statement, {"now": now}).rowcount for statement in _PURGE)

        return await self._call(op)

    # idempotency

    def _read_sent(self, key: str) -> bool | None:
        """Whether ``key`` is in the ledger, answered on the loop; None when only the worker can tell."""
        if key in self._marking:
            return True
        if not self._index.may_contain(key):
            return False
        reader = self._reader
        if reader is None:
            return None
        try:
            # fetchall: the statement runs to its end, so no read transaction stays open.
            return bool(reader.execute(_SELECT_SENT, (key, self._clock())).fetchall())
        except sqlite3.Error:
            # Busy past the reader's short timeout, or called from another thread: the worker
            # answers instead, without ever blocking the loop for long.
            return None

    async def is_sent(self, key: str) -> bool:
        answer = self._read_sent(key)
        return answer if answer is not None else await self._worker_is_sent(key)

    async def _worker_is_sent(self, key: str) -> bool:
        """The ledger's answer from the worker's connection (when the loop cannot read it)."""

        def op(conn: sqlite3.Connection, now: float) -> bool:
            return conn.execute(_SELECT_SENT, (key, now)).fetchone() is not None

        return await self._call(op, read=True)

    async def mark_sent(self, key: str, ttl: float) -> None:
        check_positive("ttl", ttl)
        if not self._worker.running:
            raise RuntimeError("the state store is not open; call open() first")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if self._marks is None:
            self._marks = []
            loop.call_soon(self._flush_marks)
        self._marks.append((key, ttl, future))
        # Before the commit: from now on the index must not rule the key out.
        self._index.add(key, self._clock() + ttl + _INDEX_EXPIRY_MARGIN)
        marking = self._marking
        marking[key] = marking.get(key, 0) + 1
        try:
            await future
        finally:
            left = marking[key] - 1
            if left:
                marking[key] = left
            else:
                del marking[key]
        self._leases.pop(key, None)  # the ledger answers from now on

    def _flush_marks(self) -> None:
        """Queue the marks of this pass as one call: one ``executemany`` in the worker's next transaction."""
        marks, self._marks = self._marks, None
        if not marks:
            return
        futures = [future for _, _, future in marks]
        if not self._worker.running:
            error = RuntimeError("the state store closed before the delivery was recorded")
            _settle_all([(future, False, error) for future in futures])
            return
        rows = [(key, ttl) for key, ttl, _ in marks]
        json_rows = self._json_rows

        def op(conn: sqlite3.Connection, now: float) -> None:
            if len(rows) > 1 and json_rows:
                conn.execute(_UPSERT_SENT_JSON, (json.dumps([[key, now + ttl] for key, ttl in rows]),))
            else:
                conn.executemany(_UPSERT_SENT, [(key, now + ttl) for key, ttl in rows])

        clock = self._clock
        # One statement: a failure undoes at most its own row, and then every caller is told.
        group = self._worker.submit(lambda conn: op(conn, clock()), single=True)
        group.add_done_callback(lambda done: _settle_group(futures, done))

    async def sent_many(self, keys: Sequence[str]) -> set[str]:
        unique = list(dict.fromkeys(keys))
        if not unique:
            return set()
        marking = {key for key in unique if key in self._marking}
        unique = [key for key in unique if key not in marking and self._index.may_contain(key)]
        if not unique:
            return marking

        def op(conn: sqlite3.Connection, now: float) -> set[str]:
            found: set[str] = set()
            for start in range(0, len(unique), _IN_CHUNK):
                chunk = unique[start : start + _IN_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT key FROM sent WHERE key IN ({marks}) AND expires_at > ?", (*chunk, now)
                ).fetchall()
                found.update(row[0] for row in rows)
            return found

        if self._reader is not None:
            try:
                return marking | op(self._reader, self._clock())
            except sqlite3.Error:
                pass  # as in _read_sent: the worker answers
        return marking | await self._call(op)

    async def claim_delivery(self, key: str, owner: str, lease: float) -> DeliveryClaim:
        check_positive("lease", lease)
        sent = self._read_sent(key)
        if sent is None:
            sent = await self._worker_is_sent(key)
        if sent:
            return SENT_CLAIM
        # No await from here on: the check and the take are atomic on the event loop.
        now = self._clock()
        leases = self._leases
        held = leases.get(key)
        if held is not None and held[0] != owner and held[1] > now:
            return DeliveryClaim("held", held[1] - now)
        if len(leases) >= self._lease_sweep_at:
            for stale in [k for k, (_, until) in leases.items() if until <= now]:
                del leases[stale]
            # Live leases are never swept: sweep again only once as many more were taken, so
            # many live ones cost one scan per doubling instead of one per claim.
            self._lease_sweep_at = max(_LEASE_SWEEP_AT, 2 * len(leases))
        leases[key] = (owner, now + lease)
        return CLAIMED

    async def release_delivery(self, key: str, owner: str) -> None:
        held = self._leases.get(key)
        if held is not None and held[0] == owner:
            del self._leases[key]

    # dedupe

    async def first_seen(self, key: str, window: float) -> bool:
        check_positive("window", window)

        def op(conn: sqlite3.Connection, now: float) -> bool:
            row = conn.execute("SELECT expires_at FROM seen WHERE key = ?", (key,)).fetchone()
            if row is not None and row[0] > now:
                return False
            conn.execute("INSERT OR REPLACE INTO seen(key, expires_at) VALUES (?, ?)", (key, now + window))
            return True

        return await self._call(op)

    async def claim(self, key: str, owner: str, ttl: float) -> str:
        check_positive("ttl", ttl)

        def op(conn: sqlite3.Connection, now: float) -> str:
            row = conn.execute("SELECT owner, expires_at FROM claims WHERE key = ?", (key,)).fetchone()
            if row is not None and row[1] > now:
                return str(row[0])
            conn.execute(
                "INSERT OR REPLACE INTO claims(key, owner, expires_at) VALUES (?, ?, ?)", (key, owner, now + ttl)
            )
            return owner

        return await self._call(op)

    # rate limit

    async def rate_allow(self, key: str, limit: int, period: float) -> bool:
        check_positive("period", period)

        def op(conn: sqlite3.Connection, now: float) -> bool:
            conn.execute("DELETE FROM rate_hits WHERE key = ? AND at <= ?", (key, now - period))
            (count,) = conn.execute("SELECT count(*) FROM rate_hits WHERE key = ?", (key,)).fetchone()
            if count >= limit:
                return False
            conn.execute("INSERT INTO rate_hits(key, at, expires_at) VALUES (?, ?, ?)", (key, now, now + period))
            return True

        return await self._call(op)

    # throttle and pacing

    @staticmethod
    def _reserve(
        conn: sqlite3.Connection, key: str, start: float, interval: float, tau: float, latest: float | None = None
    ) -> float:
        """Reserve and return the next slot, unless it would be after ``latest`` (then only return it)."""
        row = conn.execute("SELECT tat FROM gcra WHERE key = ?", (key,)).fetchone()
        slot, tat = gcra_slot(row[0] if row else None, start, interval, tau)
        if latest is not None and slot > latest:
            return slot
        # Once the clock passes tat the row means nothing, so that is when it expires.
        conn.execute("INSERT OR REPLACE INTO gcra(key, tat, expires_at) VALUES (?, ?, ?)", (key, tat, tat))
        return slot

    async def throttle_reserve(self, key: str, limit: int, period: float, burst: int | None = None) -> float:
        interval, tau = gcra_params(limit, period, burst)

        def op(conn: sqlite3.Connection, now: float) -> float:
            return self._reserve(conn, "t:" + key, now, interval, tau) - now

        return await self._call(op)

    async def pace(self, channel: str, limit: int, period: float, max_wait: float | None = None) -> float:
        interval, tau = gcra_params(limit, period, None)

        def op(conn: sqlite3.Connection, now: float) -> float:
            row = conn.execute("SELECT until FROM blocks WHERE channel = ?", (channel,)).fetchone()
            start = max(now, row[0]) if row else now
            latest = None if max_wait is None else now + max_wait
            return self._reserve(conn, "p:" + channel, start, interval, tau, latest) - now

        return await self._call(op)

    async def block(self, channel: str, until: float) -> None:
        def op(conn: sqlite3.Connection, now: float) -> None:
            if until <= now:
                return
            conn.execute(
                "INSERT INTO blocks(channel, until) VALUES (?, ?)"
                " ON CONFLICT(channel) DO UPDATE SET until = max(until, excluded.until)",
                (channel, until),
            )

        await self._call(op)

    async def blocked_for(self, channel: str) -> float:
        def op(conn: sqlite3.Connection, now: float) -> float:
            row = conn.execute("SELECT until FROM blocks WHERE channel = ?", (channel,)).fetchone()
            return max(float(row[0]) - now, 0.0) if row else 0.0

        return await self._call(op)

    # digests

    async def digest_add(self, key: str, item: bytes, window: float, max_items: int) -> DigestAdd:
        check_positive("window", window)
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, got {max_items}")

        def op(conn: sqlite3.Connection, now: float) -> DigestAdd:
            row = conn.execute(
                "SELECT due_at, listed_at, count, expires_at FROM digests WHERE key = ?", (key,)
            ).fetchone()
            if row is not None and row[3] <= now:
                # Past retention but not purged yet: it is gone, as it would be in Redis.
                conn.execute("DELETE FROM digest_items WHERE key = ?", (key,))
                row = None
            if row is None:
                due_at, listed_at, count = now + window, now + window, 0
            else:
                due_at, listed_at, count, _ = row
            count += 1
            full = count >= max_items
            if full:
                listed_at = min(listed_at, now)  # a full bucket is due at once, for whichever process flushes
            conn.execute("INSERT INTO digest_items(key, item) VALUES (?, ?)", (key, item))
            conn.execute(
                "INSERT OR REPLACE INTO digests(key, due_at, listed_at, count, expires_at) VALUES (?, ?, ?, ?, ?)",
                (key, due_at, listed_at, count, due_at + DIGEST_RETENTION),
            )
            return DigestAdd(count=count, due_at=due_at, full=full)

        return await self._call(op)

    async def digest_peek(self, key: str, limit: int | None = None) -> list[bytes]:
        def op(conn: sqlite3.Connection, now: float) -> list[bytes]:
            live = conn.execute("SELECT 1 FROM digests WHERE key = ? AND expires_at > ?", (key, now)).fetchone()
            if live is None:
                return []
            rows = conn.execute(
                "SELECT item FROM digest_items WHERE key = ? ORDER BY id LIMIT ?", (key, -1 if limit is None else limit)
            )
            return [bytes(row[0]) for row in rows]

        return await self._call(op)

    async def digest_drop(self, key: str, count: int, window: float, max_items: int) -> int:
        check_positive("window", window)

        def op(conn: sqlite3.Connection, now: float) -> int:
            if count > 0:
                last = conn.execute(
                    "SELECT max(id) FROM (SELECT id FROM digest_items WHERE key = ? ORDER BY id LIMIT ?)", (key, count)
                ).fetchone()[0]
                if last is not None:
                    conn.execute("DELETE FROM digest_items WHERE key = ? AND id <= ?", (key, last))
            (left,) = conn.execute("SELECT count(*) FROM digest_items WHERE key = ?", (key,)).fetchone()
            if left == 0:
                conn.execute("DELETE FROM digests WHERE key = ?", (key,))
                return 0
            due_at = now + window
            listed_at = now if left >= max_items else due_at
            conn.execute(
                "INSERT OR REPLACE INTO digests(key, due_at, listed_at, count, expires_at) VALUES (?, ?, ?, ?, ?)",
                (key, due_at, listed_at, left, due_at + DIGEST_RETENTION),
            )
            return int(left)

        return await self._call(op)

    async def digest_due(self, now: float) -> list[str]:
        def op(conn: sqlite3.Connection, _now: float) -> list[str]:
            rows = conn.execute("SELECT key FROM digests WHERE listed_at <= ? ORDER BY listed_at", (now,))
            return [row[0] for row in rows]

        return await self._call(op)

    async def digest_take(self, key: str) -> list[bytes]:
        def op(conn: sqlite3.Connection, _now: float) -> list[bytes]:
            rows = conn.execute("SELECT item FROM digest_items WHERE key = ? ORDER BY id", (key,)).fetchall()
            conn.execute("DELETE FROM digest_items WHERE key = ?", (key,))
            conn.execute("DELETE FROM digests WHERE key = ?", (key,))
            return [bytes(row[0]) for row in rows]

        return await self._call(op)

    # locks

    async def acquire_lock(self, name: str, owner: str, ttl: float) -> bool:
        check_positive("ttl", ttl)

        def op(conn: sqlite3.Connection, now: float) -> bool:
            row = conn.execute("SELECT owner, expires_at FROM locks WHERE name = ?", (name,)).fetchone()
            if row is not None and row[0] != owner and row[1] > now:
                return False
            conn.execute(
                "INSERT OR REPLACE INTO locks(name, owner, expires_at) VALUES (?, ?, ?)", (name, owner, now + ttl)
            )
            return True

        return await self._call(op)

    async def release_lock(self, name: str, owner: str) -> None:
        def op(conn: sqlite3.Connection, _now: float) -> None:
            conn.execute("DELETE FROM locks WHERE name = ? AND owner = ?", (name, owner))

        await self._call(op)
