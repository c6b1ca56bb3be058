"""What the SQLite store does beyond the shared contract: reads that never queue behind the
writer, marks made together committed together, nothing lost on close."""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from router.state import sqlite as sqlite_state
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


async def _index_loaded(store: SqliteStateStore) -> None:
    async with asyncio.timeout(5):
        while not store._index.ready:
            await asyncio.sleep(0.01)


async def test_keys_recorded_before_a_restart_are_known_once_the_index_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_state, "_INDEX_PAGE", 7)  # several pages
    keys = [f"before-{i}" for i in range(50)]
    async with SqliteStateStore(tmp_path / "state.db") as store:
        await asyncio.gather(*(store.mark_sent(key, ttl=60) for key in keys))
    async with SqliteStateStore(tmp_path / "state.db") as reopened:
        await _index_loaded(reopened)
        assert not reopened._index.off
        assert all([await reopened.is_sent(key) for key in keys])
        assert not await reopened.is_sent("after")
        await reopened.mark_sent("after", ttl=60)
        assert await reopened.is_sent("after")


async def test_with_another_process_on_the_database_every_read_goes_to_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.db"
    async with SqliteStateStore(path):
        pass  # creates the database
    held = os.open(f"{path}.lock", os.O_RDWR)
    fcntl.flock(held, fcntl.LOCK_EX)  # as another router process would
    try:
        async with SqliteStateStore(path) as store:
            assert store._index.off
            assert "another process uses" in caplog.text
            # What the other process records is seen at once: nothing is ruled out from memory.
            other = sqlite3.connect(path, isolation_level=None)
            other.execute("INSERT INTO sent(key, expires_at) VALUES ('theirs', 9e18)")
            other.close()
            assert await store.is_sent("theirs")
    finally:
        os.close(held)


async def test_closing_the_last_store_releases_the_database(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with SqliteStateStore(path) as first, SqliteStateStore(path) as second:
        assert first._index is second._index  # one process, one index
    with open(f"{path}.lock") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # would raise if still held


async def test_many_live_leases_do_not_make_every_claim_scan_them_all(
    store: SqliteStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_state, "_LEASE_SWEEP_AT", 100)
    store._lease_sweep_at = 100
    for number in range(1000):  # long sends: every lease stays live
        assert (await store.claim_delivery(f"k{number}", "owner", lease=60)).status == "claimed"
    # Sweeps happened at 100, 200, 400 and 800 leases only, and no live lease was dropped.
    assert store._lease_sweep_at == 1600
    assert (await store.claim_delivery("k0", "another owner", lease=60)).status == "held"
