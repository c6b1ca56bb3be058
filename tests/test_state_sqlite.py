"""What the SQLite store does beyond the shared contract: reads that never queue behind the
writer, marks made together committed together, nothing lost on close."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from router.state.sqlite import SqliteStateStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStateStore]:
    async with SqliteStateStore(tmp_path / "state.db") as opened:
        yield opened


async def test_the_ledger_answers_while_the_writer_waits_for_a_lock(store: SqliteStateStore) -> None:
    await store.mark_sent("done", ttl=60)
    # Another process (here a second connection) holds the write lock: the store's writer waits
    # for it. Reads must not wait behind it, and a send waiting for its commit counts as sent.
    other = sqlite3.connect(store.path, isolation_level=None, timeout=10)
    try:
        other.execute("BEGIN IMMEDIATE")
        pending = asyncio.create_task(store.mark_sent("pending", ttl=60))
        await asyncio.sleep(0)  # one step: the mark is queued and waits for the writer
        assert not pending.done()
        async with asyncio.timeout(2):
            assert await store.is_sent("done")
            assert await store.is_sent("pending")
            assert not await store.is_sent("never")
            assert await store.sent_many(["done", "pending", "never"]) == {"done", "pending"}
        other.execute("ROLLBACK")
        await pending
    finally:
        other.close()
    assert await store.is_sent("pending")


async def test_marks_made_together_all_commit_and_survive_a_restart(tmp_path: Path) -> None:
    keys = [f"event-{i}:rule:channel" for i in range(300)]
    async with SqliteStateStore(tmp_path / "state.db") as store:
        await asyncio.gather(*(store.mark_sent(key, ttl=60) for key in keys))
    async with SqliteStateStore(tmp_path / "state.db") as reopened:
        assert await reopened.sent_many(keys) == set(keys)
        assert all([await reopened.is_sent(key) for key in keys])


async def test_a_failed_commit_is_reported_to_its_callers_and_later_marks_still_work(
    store: SqliteStateStore,
) -> None:
    setup = sqlite3.connect(store.path, isolation_level=None)
    setup.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON sent WHEN NEW.key = 'poison' BEGIN SELECT RAISE(ABORT, 'refused'); END"
    )
    setup.close()
    results = await asyncio.gather(store.mark_sent("poison", ttl=60), return_exceptions=True)
    assert isinstance(results[0], sqlite3.IntegrityError)
    assert not await store.is_sent("poison")  # a failed mark is not taken for a send
    await store.mark_sent("after", ttl=60)
    assert await store.is_sent("after")


async def test_close_commits_marks_made_in_the_same_pass(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "state.db")
    await store.open()
    late = asyncio.create_task(store.mark_sent("late", ttl=60))
    await asyncio.sleep(0)  # the mark is made; its batch would go to the worker at the end of the pass
    await store.close()
    await late
    async with SqliteStateStore(tmp_path / "state.db") as reopened:
        assert await reopened.is_sent("late")


async def test_a_store_used_from_another_thread_answers_through_its_worker(store: SqliteStateStore) -> None:
    await store.mark_sent("k", ttl=60)
    # The loop's reader belongs to the loop's thread; a call from elsewhere goes to the worker.
    assert await asyncio.to_thread(asyncio.run, store.is_sent("k"))
    assert not await asyncio.to_thread(asyncio.run, store.is_sent("other"))


async def test_memory_store_reads_through_its_worker() -> None:
    async with SqliteStateStore(":memory:") as store:
        assert not await store.is_sent("k")
        await store.mark_sent("k", ttl=60)
        assert await store.is_sent("k")
