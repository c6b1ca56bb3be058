"""The embedded transport: a durable queue in one SQLite file, inside the router's process.

It is the default when no broker URL is configured, fed by the HTTP ingest endpoint, and keeps
the RabbitMQ transport's guarantees on one machine:

- ``publish_event``, ``schedule_retry`` and ``dead_letter`` return once their row is
  committed (WAL, ``synchronous=FULL``: it survives a crash of the process or the machine);
- a message handed to the handler is leased in memory until it is acknowledged (its row is
  deleted) or requeued (handed out again, ``redelivered=True``); at most ``prefetch`` are
  unacknowledged at once;
- after a restart every row not acknowledged is delivered again. Rows that existed when the
  file was opened are marked ``redelivered=True``: they may have been handed out before.

One connection lives on one dedicated worker thread, so the event loop never waits on the
disk and there is exactly one writer. Calls queue up for that thread, which runs whatever has
queued as one transaction (group commit): under load many inserts and deletes share one
fsync, yet no caller resumes before its own transaction has committed.

The consumer sleeps until something is published or requeued, a slot frees up, or the next
retry falls due (a timer on the earliest ``due_at``). It also looks again every
``poll_interval`` seconds while idle, to pick up rows another process wrote to the same file
(``router publish`` or ``router dlq replay`` from the command line). Only one process may
consume a file at a time: leases live in memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from router.support.private_files import create_private_file
from router.support.sqlite_worker import Op, SharedStatement, SqliteWorker
from router.transports.base import (
    H_DEAD_AT,
    DeadLetter,
    Handler,
    Incoming,
    MessageKind,
    Transport,
    TransportError,
)

T = TypeVar("T")

log = logging.getLogger(__name__)

REQUEUE_PAUSE_MIN = 0.05
REQUEUE_PAUSE_MAX = 1.0
_MAX_BATCH = 1024  # calls per transaction: bounds how long one commit holds the write lock
_PAGE = 200  # dead letters read per query when replaying

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    routing_key TEXT NOT NULL,
    content_type TEXT,
    headers TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS retries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    due_at REAL NOT NULL,
    headers TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS retries_due ON retries(due_at, id);
CREATE TABLE IF NOT EXISTS dead_letters (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    headers TEXT NOT NULL,
    body BLOB NOT NULL,
    dead_at REAL NOT NULL
);
"""
# AUTOINCREMENT matters: event ids must never be reused after a delete, because the consumer
# reads events past a cursor (the highest id it has taken).


def _execute(sql: str, params: Sequence[Any] = ()) -> Op[int]:
    """An operation running one statement; its result is the number of rows changed."""
    return lambda conn: conn.execute(sql, params).rowcount


_INSERT_EVENT = SharedStatement(
    "INSERT INTO events(routing_key, content_type, headers, body) VALUES ", "(?, ?, ?, ?)", width=4
)
_INSERT_RETRY = SharedStatement("INSERT INTO retries(due_at, headers, body) VALUES ", "(?, ?, ?)", width=3)
_DELETE_EVENT = SharedStatement("DELETE FROM events WHERE id IN (", "?", ")")
_DELETE_RETRY = SharedStatement("DELETE FROM retries WHERE id IN (", "?", ")")


def _connect(path: str) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=30.0)
    except Exception as exc:
        raise TransportError(f"cannot open the embedded queue {path}: {exc}") from exc
    try:
        _incremental_vacuum_mode(conn)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        # A flood's WAL is cut back to this size at the next checkpoint instead of staying.
        conn.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT}")
        conn.executescript(_SCHEMA)
    except Exception as exc:
        conn.close()
        raise TransportError(f"cannot open the embedded queue {path}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _worker(path: str) -> SqliteWorker:
    """The queue file's one writer. Every call is one statement, or a row of a shared one."""

    def commit_failed(exc: Exception) -> Exception:
        return TransportError(f"the embedded queue failed to commit: {exc}")

    return SqliteWorker(
        connect=lambda: _connect(path),
        name="router-queue-sqlite",
        max_batch=_MAX_BATCH,
        closed_error=lambda: TransportError(f"the embedded queue {path} is closed"),
        batch_error=commit_failed,
        between_batches=_Reclaimer().step,
    )


_WAL_LIMIT = 4 * 1024 * 1024
_RECLAIM_EVERY = 1.0  # seconds between two looks at the free pages
_RECLAIM_MIN_PAGES = 256  # below this many free pages (1 MiB of 4 KiB pages) the file is left alone
_RECLAIM_STEP = 2048  # pages freed per step: bounds how long one step holds the write lock


def _incremental_vacuum_mode(conn: sqlite3.Connection) -> None:
    """Make the file give back its free pages on request (``auto_vacuum=INCREMENTAL``).

    A new file takes the mode at once; a file made by an older version is rebuilt once
    (``VACUUM``), which copies what it holds: fast for a queue, which is normally near empty.
    """
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:
        return
    conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
        log.info("embedded queue: converting the file to incremental vacuum (once)")
        conn.execute("VACUUM")


class _Reclaimer:
    """Gives the space of drained rows back to the file system, a bounded step at a time.

    After a flood the tables are empty again but the file keeps its size: SQLite reuses free
    pages, it does not return them. Once free pages are at least a quarter of the file (and
    over :data:`_RECLAIM_MIN_PAGES`), each look frees up to :data:`_RECLAIM_STEP` of them and
    checkpoints, which truncates the file. Runs on the worker thread, between batches.
    """

    def __init__(self) -> None:
        self._next = 0.0

    def step(self, conn: sqlite3.Connection) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + _RECLAIM_EVERY
        try:
            free = conn.execute("PRAGMA freelist_count").fetchone()[0]
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            if free < _RECLAIM_MIN_PAGES or free * 4 < pages:
                return
            # executescript: it steps the pragma to its end; execute() would free one page.
            conn.executescript(f"PRAGMA incremental_vacuum({_RECLAIM_STEP});")
            # TRUNCATE also empties the WAL; without waiting: a reader elsewhere (`router dlq`)
            # makes it a no-op this time, not a stall of the queue.
            conn.execute("PRAGMA busy_timeout=0")
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            finally:
                conn.execute("PRAGMA busy_timeout=30000")
        except sqlite3.Error as error:  # reclaiming is housekeeping: the queue works without it
            log.debug("embedded queue: could not reclaim free pages: %s", error)


# ---------------------------------------------------------------------------- rows and leases


def _dump_headers(headers: dict[str, Any] | None) -> str:
    if not headers:
        return "{}"  # most events: json.dumps with a default= builds an encoder on every call

    def fallback(value: Any) -> Any:
        if isinstance(value, bytes):
            return value.decode("utf-8", "replace")
        raise TypeError(f"a header value of type {type(value).__name__} cannot be stored in the embedded queue")

    return json.dumps(headers or {}, separators=(",", ":"), default=fallback)


def _load_headers(text: str) -> dict[str, Any]:
    return {} if text == "{}" else dict(json.loads(text))


@dataclass(slots=True)
class _Row:
    kind: MessageKind
    id: int
    body: bytes
    headers: dict[str, Any]
    routing_key: str | None
    content_type: str | None
    redelivered: bool


class _Lease:
    """The ack/requeue closures of one handed-out row: the first call wins, none raises."""

    __slots__ = ("row", "settled", "transport")

    def __init__(self, transport: EmbeddedTransport, row: _Row) -> None:
        self.transport = transport
        self.row = row
        self.settled = False

    async def ack(self) -> None:
        if self.settled:
            return
        self.settled = True
        await self.transport._acked(self.row)

    async def requeue(self) -> None:
        if self.settled:
            return
        self.settled = True
        # Held back (keeping its prefetch slot) while requeues repeat with no ack in between:
        # a full disk or a state store down then slows consumption instead of spinning.
        pause = self.transport._requeue_pause()
        if pause:
            await asyncio.sleep(pause)
        self.transport._requeued(self.row)


# ---------------------------------------------------------------------------- the transport


class EmbeddedTransport(Transport):
    """A durable queue, its retries and its dead letters in one SQLite file."""

    name = "embedded"

    def __init__(self, path: str | Path, *, poll_interval: float | None = 1.0) -> None:
        # Resolve now, so that a later chdir does not move the queue.
        self.path = Path(path).absolute()
        self._poll_interval = poll_interval
        self._worker = _worker(str(self.path))
        self._boot_event_id = 0
        self._boot_retry_id = 0

        self._handler: Handler | None = None
        self._prefetch = 1
        self._consumer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._ready: deque[_Row] = deque()
        self._unacked = 0
        self._requeues = 0  # requeues since the last ack: the disk or the state store is failing
        self._cursor = 0  # highest event id taken into memory
        self._held_retries: set[int] = set()  # retry ids in memory (ready, handed out, or being deleted)
        self._new_data = False
        self._wake: asyncio.Event | None = None

    async def _sql(self, op: Op[T]) -> T:
        """Run ``op`` (one statement) in the worker's next transaction."""
        return await self._worker.call(op, single=True)

    def __repr__(self) -> str:
        return f"EmbeddedTransport({str(self.path)!r})"

    # lifecycle

    async def connect(self) -> None:
        if self._worker.running:
            return
        try:
            # 0600 before SQLite opens it: its -wal and -shm files take the database file's mode.
            create_private_file(self.path)
        except OSError as exc:
            raise TransportError(f"cannot create the folder of the embedded queue {self.path}: {exc}") from None
        await self._worker.start()

        def boot(conn: sqlite3.Connection) -> tuple[int, int]:
            events = conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]
            retries = conn.execute("SELECT COALESCE(MAX(id), 0) FROM retries").fetchone()[0]
            return int(events), int(retries)

        self._boot_event_id, self._boot_retry_id = await self._sql(boot)
        self._wake = asyncio.Event()
        self._cursor = 0
        self._ready.clear()
        self._held_retries.clear()
        self._unacked = 0

    async def start(self, handler: Handler, *, prefetch: int) -> None:
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        await self.connect()
        if self._consumer is not None:
            raise RuntimeError("the transport is already consuming")
        self._handler = handler
        self._prefetch = prefetch
        self._new_data = True
        self._consumer = asyncio.create_task(self._consume(), name="router-queue-consumer")

    async def stop_consuming(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        # Rows fetched but not handed out stay in memory; start() would resume with them, and
        # a restart delivers them again from the file.

    async def close(self) -> None:
        await self.stop_consuming()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._worker.stop()
        self._ready.clear()
        self._held_retries.clear()
        self._unacked = 0

    @property
    def connected(self) -> bool:
        return self._worker.running

    # consuming

    def _signal(self, *, new_data: bool) -> None:
        if new_data:
            self._new_data = True
        if self._wake is not None:
            self._wake.set()

    async def _consume(self) -> None:
        assert self._wake is not None
        drained = False
        next_due: float | None = None
        while True:
            self._wake.clear()
            # While requeues repeat with no ack (a full disk, the state store down), one message
            # at a time probes for recovery instead of the whole prefetch failing in a loop.
            limit = self._prefetch if self._requeues <= 1 else 1
            while self._ready and self._unacked < limit:
                self._hand_out(self._ready.popleft())
            if self._new_data:
                self._new_data = False
                drained = False
            # Read ahead up to `prefetch` rows, so that a freed slot is refilled from memory, and
            # refill only at half: one read per many acks, not one per ack.
            refill = len(self._ready) <= self._prefetch // 2
            if refill and not drained:
                try:
                    rows, drained, next_due = await self._fetch(self._prefetch - len(self._ready))
                except Exception:
                    log.exception("reading the embedded queue failed; trying again")
                    rows, drained, next_due = [], True, time.time() + 1.0
                self._ready.extend(rows)
                continue
            timeout = None  # with enough rows in memory, only an ack or a requeue matters
            if refill:
                timeout = self._poll_interval
                if next_due is not None:
                    until_due = max(next_due - time.time(), 0.0)
                    timeout = until_due if timeout is None else min(timeout, until_due)
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                # that races with the event being set, and stop_consuming would wait forever.
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                drained = False  # a retry fell due, or time to look for other writers' rows

    async def _fetch(self, want: int) -> tuple[list[_Row], bool, float | None]:
        """Up to ``want`` due retries and ``want`` events not yet in memory, interleaved."""
        cursor, held = self._cursor, frozenset(self._held_retries)
        boot_event, boot_retry = self._boot_event_id, self._boot_retry_id

        def op(conn: sqlite3.Connection) -> tuple[list[_Row], list[_Row], float | None]:
            now = time.time()
            events = [
                _Row("event", i, body, _load_headers(headers), key, ctype, i <= boot_event)
                for i, key, ctype, headers, body in conn.execute(
                    "SELECT id, routing_key, content_type, headers, body FROM events WHERE id > ? ORDER BY id LIMIT ?",
                    (cursor, want),
                )
            ]
            retries: list[_Row] = []
            for i, headers, body in conn.execute(
                "SELECT id, headers, body FROM retries WHERE due_at <= ? ORDER BY due_at, id LIMIT ?",
                (now, want + len(held)),
            ):
                if i not in held and len(retries) < want:
                    retries.append(_Row("retry", i, body, _load_headers(headers), None, None, i <= boot_retry))
            due = conn.execute("SELECT MIN(due_at) FROM retries WHERE due_at > ?", (now,)).fetchone()[0]
            return events, retries, due

        events, retries, next_due = await self._sql(op)
        if events:
            self._cursor = max(self._cursor, events[-1].id)
        self._held_retries.update(row.id for row in retries)
        # Interleave, so that neither a backlog of events nor a burst of retries starves the other.
        rows: list[_Row] = []
        for pair in zip(retries, events, strict=False):
            rows.extend(pair)
        shorter = min(len(retries), len(events))
        rows.extend(retries[shorter:] or events[shorter:])
        drained = len(events) < want and len(retries) < want
        return rows, drained, next_due

    def _hand_out(self, row: _Row) -> None:
        assert self._handler is not None
        self._unacked += 1
        lease = _Lease(self, row)
        incoming = Incoming(
            kind=row.kind,
            body=row.body,
            headers=dict(row.headers),
            routing_key=row.routing_key,
            content_type=row.content_type,
            redelivered=row.redelivered,
            ack=lease.ack,
            requeue=lease.requeue,
        )
        task = asyncio.create_task(self._run_handler(self._handler, incoming, lease))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _run_handler(handler: Handler, incoming: Incoming, lease: _Lease) -> None:
        try:
            await handler(incoming)
        except Exception:
            log.exception("handling a %s message failed; requeueing it", incoming.kind)
            await lease.requeue()

    def _requeue_pause(self) -> float:
        """Seconds to hold a requeued row: 0 at first, then 50 ms doubling to 1 s while nothing is acked
        (as the RabbitMQ transport does)."""
        self._requeues += 1
        if self._requeues <= 1:
            return 0.0
        return float(min(REQUEUE_PAUSE_MAX, REQUEUE_PAUSE_MIN * 2.0 ** (self._requeues - 2)))

    async def _acked(self, row: _Row) -> None:
        self._requeues = 0
        self._unacked -= 1
        self._signal(new_data=False)
        try:
            await self._worker.write(_DELETE_EVENT if row.kind == "event" else _DELETE_RETRY, row.id)
        except Exception as exc:
            # Not an error for the caller: the row stays and is delivered again after a restart.
            log.debug("ack of %s %d not stored: %s", row.kind, row.id, exc)
            return
        if row.kind == "retry":
            self._held_retries.discard(row.id)

    def _requeued(self, row: _Row) -> None:
        self._unacked -= 1
        row.redelivered = True
        self._ready.appendleft(row)
        self._signal(new_data=False)

    # publishing

    async def publish_event(
        self, body: bytes, *, routing_key: str, headers: dict[str, Any] | None = None, content_type: str | None = None
    ) -> None:
        encoded = _dump_headers(headers)
        await self._worker.write(_INSERT_EVENT, routing_key, content_type, encoded, body)
        self._signal(new_data=True)

    async def schedule_retry(self, record: bytes, *, delay: float, headers: dict[str, Any]) -> float:
        delay = max(delay, 0.0)
        encoded = _dump_headers(headers)
        await self._worker.write(_INSERT_RETRY, time.time() + delay, encoded, record)
        self._signal(new_data=True)
        return delay

    # dead letters

    async def dead_letter(self, body: bytes, *, headers: dict[str, Any]) -> str | None:
        headers = dict(headers)
        headers.setdefault(H_DEAD_AT, round(time.time(), 3))
        encoded = _dump_headers(headers)
        letter_id = uuid.uuid4().hex
        await self._sql(
            _execute(
                "INSERT INTO dead_letters(id, headers, body, dead_at) VALUES (?, ?, ?, ?)",
                (letter_id, encoded, body, time.time()),
            )
        )
        return letter_id

    @staticmethod
    def _letters(rows: list[tuple[Any, ...]]) -> list[tuple[int, DeadLetter]]:
        return [
            (seq, DeadLetter.from_headers(letter_id, body, json.loads(headers), dead_at=dead_at))
            for seq, letter_id, headers, body, dead_at in rows
        ]

    async def _letter_page(self, after: int, limit: int) -> list[tuple[int, DeadLetter]]:
        rows = await self._sql(
            lambda conn: conn.execute(
                "SELECT seq, id, headers, body, dead_at FROM dead_letters WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, limit),
            ).fetchall()
        )
        return self._letters(rows)

    async def dlq_list(self, limit: int = 100) -> list[DeadLetter]:
        return [letter for _, letter in await self._letter_page(0, max(limit, 0))]

    async def dlq_replay(
        self, ids: Sequence[str] | None, republish: Callable[[DeadLetter], Awaitable[None]]
    ) -> list[DeadLetter]:
        wanted = None if ids is None else set(ids)
        # Only what is there now: a replayed letter that dies again must not loop forever.
        last = await self._sql(
            lambda conn: conn.execute("SELECT COALESCE(MAX(seq), 0) FROM dead_letters").fetchone()[0]
        )
        replayed: list[DeadLetter] = []
        after = 0
        while wanted is None or wanted:
            page = [(seq, letter) for seq, letter in await self._letter_page(after, _PAGE) if seq <= last]
            if not page:
                break
            after = page[-1][0]
            for _, letter in page:
                if wanted is not None and letter.id not in wanted:
                    continue
                await republish(letter)
                await self._sql(_execute("DELETE FROM dead_letters WHERE id = ?", (letter.id,)))
                replayed.append(letter)
                if wanted is not None:
                    wanted.discard(letter.id)
        return replayed

    async def dlq_purge(self) -> int:
        return await self._sql(_execute("DELETE FROM dead_letters"))

    async def queue_depth(self) -> int | None:
        if not self._worker.running:
            return None
        cursor = self._cursor
        stored = await self._sql(
            lambda conn: conn.execute("SELECT COUNT(*) FROM events WHERE id > ?", (cursor,)).fetchone()[0]
        )
        return int(stored) + sum(1 for row in self._ready if row.kind == "event")
