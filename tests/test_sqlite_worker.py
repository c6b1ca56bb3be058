"""support/sqlite_worker.py: calls of one loop pass go to the thread together, in order, and all commit."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

from router.support.sqlite_worker import SharedStatement, SqliteWorker

INSERT = SharedStatement(head="INSERT INTO t (n) VALUES ", row="(?)")


def make(path: Path, max_batch: int, batches: list[int]) -> SqliteWorker:
    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        conn.execute("CREATE TABLE IF NOT EXISTS t (n INTEGER)")
        return conn

    def between(conn: sqlite3.Connection) -> None:
        batches.append(conn.execute("SELECT count(*) FROM t").fetchone()[0])

    return SqliteWorker(
        connect=connect,
        name="test-sqlite",
        max_batch=max_batch,
        closed_error=lambda: RuntimeError("closed"),
        between_batches=between,
    )


def rows(path: Path) -> list[int]:
    with sqlite3.connect(path) as conn:
        return [n for (n,) in conn.execute("SELECT n FROM t ORDER BY rowid")]


async def test_calls_made_in_one_pass_commit_in_one_transaction(tmp_path: Path) -> None:
    committed: list[int] = []
    worker = make(tmp_path / "a.db", max_batch=1000, batches=committed)
    await worker.start()
    await asyncio.gather(*(worker.write(INSERT, n) for n in range(50)))
    await worker.stop()
    assert committed == [50]  # one transaction (one fsync) for the whole pass
    assert rows(tmp_path / "a.db") == list(range(50))


async def test_a_pass_beyond_max_batch_is_split_in_order_and_nothing_is_lost(tmp_path: Path) -> None:
    committed: list[int] = []
    worker = make(tmp_path / "a.db", max_batch=16, batches=committed)
    await worker.start()
    await asyncio.gather(*(worker.write(INSERT, n) for n in range(100)))
    await worker.stop()
    assert rows(tmp_path / "a.db") == list(range(100))
    assert committed[-1] == 100 and all(b - a <= 16 for a, b in zip([0, *committed], committed, strict=False))


async def test_calls_queued_when_stop_is_asked_still_commit(tmp_path: Path) -> None:
    worker = make(tmp_path / "a.db", max_batch=8, batches=[])
    await worker.start()
    writes = [worker.submit(lambda conn, n=n: conn.execute("INSERT INTO t (n) VALUES (?)", (n,))) for n in range(30)]
    await worker.stop()
    await asyncio.gather(*writes)
    assert rows(tmp_path / "a.db") == list(range(30))


async def test_a_call_from_another_loop_is_answered(tmp_path: Path) -> None:
    worker = make(tmp_path / "a.db", max_batch=8, batches=[])
    await worker.start()
    answers: list[int] = []

    def elsewhere() -> None:
        async def call() -> int:
            return await worker.call(lambda conn: conn.execute("SELECT 41 + 1").fetchone()[0], read=True)

        answers.append(asyncio.run(call()))

    thread = threading.Thread(target=elsewhere)
    thread.start()
    await asyncio.to_thread(thread.join, 10)
    await worker.stop()
    assert answers == [42]
