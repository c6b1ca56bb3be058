"""One SQLite connection on one thread, running queued calls in group-committed batches.

The state store (router/state/sqlite.py) and the embedded queue (router/transports/embedded.py)
both write through it, so the event loop never waits on disk and each file has one writer.
Calls queue up while a transaction commits; the worker then drains what is queued (up to
``max_batch`` calls) and runs it as one transaction: under load many writes share one fsync,
yet none is answered before its transaction committed.

A call is either an operation (a function of the connection) or one row of a
:class:`SharedStatement` (concurrent inserts of one table become one multi-row statement).
An operation marked ``single`` runs exactly one SQL statement, which SQLite undoes by itself
when it fails; any other operation runs in a savepoint, so one failing call never undoes its
neighbours. A ``read`` (a single statement that writes nothing) is answered as soon as it ran,
not after the commit: it sees what is committed plus the batch's earlier writes, and if the
commit then fails those writers fail and are retried, so a read never reports something the
file goes back on for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

Op = Callable[[sqlite3.Connection], T]
_Settled = tuple["asyncio.Future[Any]", bool, Any]

MAX_VARIABLES = 900
"""Parameters per statement, below SQLite's historical limit of 999."""


@dataclass(frozen=True, slots=True)
class SharedStatement:
    """A statement concurrent calls share: one ``row`` per call, between ``head`` and ``tail``.

    Each step of a statement hands the GIL back and forth between the worker and the event
    loop, so one multi-row statement per batch beats one statement per call.
    """

    head: str
    row: str
    tail: str = ""
    width: int = 1  # parameters per row

    def sql(self, rows: int) -> str:
        return self.head + ", ".join([self.row] * rows) + self.tail


@dataclass(slots=True)
class _Call:
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    op: Op[Any] | None = None
    shared: SharedStatement | None = None
    params: tuple[Any, ...] = ()
    single: bool = False
    read: bool = False


def _settle_all(settled: Sequence[_Settled]) -> None:
    for future, ok, value in settled:
        if future.done():  # cancelled, or a read already answered before its batch failed
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


def _post(settled: Sequence[tuple[_Call, bool, Any]]) -> None:
    """Settle calls from the worker thread: one wake-up of each waiting loop per batch."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Settled]] = {}
    for call, ok, value in settled:
        by_loop.setdefault(call.loop, []).append((call.future, ok, value))
    for loop, futures in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(_settle_all, futures)


class SqliteWorker:
    """The thread that owns one SQLite connection; :meth:`call` and :meth:`write` queue work for it."""

    def __init__(
        self,
        *,
        connect: Callable[[], sqlite3.Connection],
        name: str,
        max_batch: int,
        closed_error: Callable[[], Exception],
        batch_error: Callable[[Exception], Exception] = lambda exc: exc,
        between_batches: Callable[[sqlite3.Connection], None] | None = None,
    ) -> None:
        self._connect = connect  # runs on the worker thread; creates the schema
        self._name = name
        self._max_batch = max_batch
        self._closed_error = closed_error  # what a call on a stopped worker raises
        self._batch_error = batch_error  # what each call of a batch whose commit failed raises
        self._between_batches = between_batches  # housekeeping on the worker (purges)
        self._calls: queue.SimpleQueue[list[_Call] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Future[None] | None = None
        # Calls made in one pass of the starting loop, handed to the thread together: each hand-off
        # wakes the thread (a futex call, then interpreter-lock hand-offs), so one per pass, not per call.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[_Call] | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    async def start(self) -> None:
        """Open the connection on a new thread; raises what opening it raised."""
        if self._thread is not None:
            return
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        self._stopped = loop.create_future()
        self._loop = loop
        self._thread = threading.Thread(target=self._run, args=(loop, ready), name=self._name, daemon=True)
        self._thread.start()
        try:
            await ready
        except BaseException:
            self._thread = None
            raise

    async def stop(self) -> None:
        """Finish every queued call, close the connection and end the thread."""
        thread, stopped = self._thread, self._stopped
        if thread is None or stopped is None:
            return
        self._thread = None
        self._hand_over()
        self._calls.put(None)  # after every queued call, so those still commit
        await stopped
        await asyncio.to_thread(thread.join)

    def submit(self, op: Op[T], *, single: bool = False, read: bool = False) -> asyncio.Future[T]:
        """Queue ``op`` for the next transaction; the future settles once it committed (a read: once it ran)."""
        if self._thread is None:
            raise self._closed_error()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._enqueue(_Call(future, loop, op=op, single=single or read, read=read))
        return future

    async def call(self, op: Op[T], *, single: bool = False, read: bool = False) -> T:
        """Run ``op`` in the worker's next transaction and return its result."""
        return await self.submit(op, single=single, read=read)

    async def write(self, statement: SharedStatement, *params: Any) -> None:
        """Add one row to ``statement``; returns once the transaction committed."""
        if self._thread is None:
            raise self._closed_error()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._enqueue(_Call(future, loop, shared=statement, params=params))
        await future

    def _enqueue(self, call: _Call) -> None:
        if call.loop is not self._loop:  # another loop's call (a test's, a helper thread's): at once
            self._calls.put([call])
            return
        if self._pending is None:
            self._pending = []
            call.loop.call_soon(self._hand_over)
        self._pending.append(call)

    def _hand_over(self) -> None:
        """Give the thread every call queued in this pass of the loop, in one wake-up."""
        pending, self._pending = self._pending, None
        if pending:
            self._calls.put(pending)

    # ------------------------------------------------------------------ the worker thread

    def _run(self, loop: asyncio.AbstractEventLoop, ready: asyncio.Future[None]) -> None:
        assert self._stopped is not None
        stopped = _Call(self._stopped, loop)
        try:
            conn = self._connect()
        except Exception as exc:
            _post([(_Call(ready, loop), False, exc), (stopped, True, None)])
            return
        _post([(_Call(ready, loop), True, None)])
        carried: list[_Call] = []  # calls beyond the last batch's max_batch, first in the next
        stop = False
        try:
            while True:
                if carried:
                    batch, carried = carried, []
                else:
                    first = self._calls.get()
                    if first is None:
                        return
                    batch = list(first)
                while len(batch) < self._max_batch and not stop:
                    try:
                        more = self._calls.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stop = True
                    else:
                        batch += more
                batch, carried = batch[: self._max_batch], batch[self._max_batch :]
                self._run_batch(conn, batch)
                if stop and not carried:
                    return
                if self._between_batches is not None:
                    self._between_batches(conn)
        finally:
            conn.close()
            _post([(stopped, True, None)])

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Call]) -> None:
        settled: list[tuple[_Call, bool, Any]] = []
        answered: list[tuple[_Call, bool, Any]] = []
        shared: dict[SharedStatement, list[_Call]] = {}
        try:
            conn.execute("BEGIN IMMEDIATE")
            for call in batch:
                if call.shared is not None:
                    shared.setdefault(call.shared, []).append(call)
                    continue
                assert call.op is not None
                if call.single:
                    try:
                        outcome: tuple[_Call, bool, Any] = (call, True, call.op(conn))
                    except Exception as exc:
                        outcome = (call, False, exc)
                    (answered if call.read else settled).append(outcome)
                    continue
                conn.execute("SAVEPOINT op")
                try:
                    value = call.op(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    settled.append((call, False, exc))
                else:
                    conn.execute("RELEASE op")
                    settled.append((call, True, value))
            if answered:
                _post(answered)
            for statement, calls in shared.items():
                rows = max(1, MAX_VARIABLES // statement.width)
                for start in range(0, len(calls), rows):
                    chunk = calls[start : start + rows]
                    try:
                        conn.execute(statement.sql(len(chunk)), [p for call in chunk for p in call.params])
                    except Exception as exc:
                        settled += [(call, False, exc) for call in chunk]
                    else:
                        settled += [(call, True, None) for call in chunk]
            conn.execute("COMMIT")
        except Exception as exc:
            # The transaction as a whole failed (disk full, I/O error): none of it happened.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            error = self._batch_error(exc)
            done = {id(call) for call, _, _ in answered}
            settled = [(call, False, error) for call in batch if id(call) not in done]
        _post(settled)
