"""One contract for every state store: each test runs against SQLite (a temp file) and Redis (real server)."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from router.state import DigestAdd, StateStore, open_state_store
from router.state.redis import RedisStateStore
from router.state.sqlite import SqliteStateStore

START = 1_700_000_000.0


class FakeClock:
    """Wall-clock stand-in shared by every store of a test, moved by hand instead of by sleeping."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


StoreFactory = Callable[[], Awaitable[StateStore]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.integration)])
async def new_store(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> AsyncIterator[StoreFactory]:
    """A factory of opened stores that all share one backend (one SQLite file, or one Redis key prefix).

    Two stores from one factory are two separate connections, as two router processes would have.
    """
    backend: str = request.param
    prefix = f"test-state:{uuid.uuid4().hex}:"
    # The conftest fixture skips (or, in CI, fails) when Redis does not answer.
    redis_url: str = request.getfixturevalue("redis_url") if backend == "redis" else ""
    opened: list[StateStore] = []

    async def factory() -> StateStore:
        store: StateStore
        if backend == "sqlite":
            store = SqliteStateStore(tmp_path / "state" / "state.db", clock=clock)
        else:
            store = RedisStateStore(redis_url, prefix=prefix, clock=clock)
        await store.open()
        opened.append(store)
        return store

    yield factory
    for store in opened:
        await store.close()
    if backend == "redis":
        client = aioredis.Redis.from_url(redis_url)
        try:
            keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


@pytest.fixture
async def store(new_store: StoreFactory) -> StateStore:
    return await new_store()


# idempotency


async def test_mark_sent_is_remembered_until_ttl(store: StateStore, clock: FakeClock) -> None:
    assert not await store.is_sent("evt-1:rule:discord")
    await store.mark_sent("evt-1:rule:discord", ttl=60)
    assert await store.is_sent("evt-1:rule:discord")
    assert not await store.is_sent("evt-1:rule:slack")
    clock.advance(59.9)
    assert await store.is_sent("evt-1:rule:discord")
    clock.advance(0.2)
    assert not await store.is_sent("evt-1:rule:discord")


async def test_sent_many_returns_the_sent_subset(store: StateStore, clock: FakeClock) -> None:
    await store.mark_sent("a", ttl=10)
    await store.mark_sent("b", ttl=100)
    assert await store.sent_many(["a", "b", "c", "a"]) == {"a", "b"}
    assert await store.sent_many([]) == set()
    clock.advance(50)
    assert await store.sent_many(["a", "b", "c"]) == {"b"}


async def test_sent_many_handles_large_batches(store: StateStore) -> None:
    keys = [f"k{i}" for i in range(1200)]
    await asyncio.gather(*(store.mark_sent(key, ttl=60) for key in keys[::2]))
    assert await store.sent_many(keys) == set(keys[::2])


# dedupe


async def test_first_seen_is_true_once_per_window(store: StateStore, clock: FakeClock) -> None:
    assert await store.first_seen("user-1:planet-9", window=3600)
    assert not await store.first_seen("user-1:planet-9", window=3600)
    assert await store.first_seen("user-2:planet-9", window=3600)
    clock.advance(3599)
    # Repeats inside the window do not extend it: the window runs from the first sighting.
    assert not await store.first_seen("user-1:planet-9", window=3600)
    clock.advance(1)
    assert await store.first_seen("user-1:planet-9", window=3600)
    assert not await store.first_seen("user-1:planet-9", window=3600)


async def test_first_seen_under_concurrency_from_two_connections(new_store: StoreFactory) -> None:
    one, two = await new_store(), await new_store()
    calls = [(one if i % 2 else two).first_seen("dup", window=60) for i in range(100)]
    results = await asyncio.gather(*calls)
    assert results.count(True) == 1


async def test_claim_is_held_by_the_first_owner_for_its_ttl(store: StateStore, clock: FakeClock) -> None:
    assert await store.claim("k", "evt-1", ttl=60) == "evt-1"
    assert await store.claim("k", "evt-2", ttl=60) == "evt-1"
    assert await store.claim("k", "evt-1", ttl=60) == "evt-1"  # the holder recognises itself
    assert await store.claim("other", "evt-2", ttl=60) == "evt-2"
    clock.advance(59)
    assert await store.claim("k", "evt-3", ttl=60) == "evt-1"  # repeats did not extend the hold
    clock.advance(1)
    assert await store.claim("k", "evt-3", ttl=60) == "evt-3"


async def test_claim_has_one_winner_across_connections(new_store: StoreFactory) -> None:
    one, two = await new_store(), await new_store()
    calls = [(one if i % 2 else two).claim("race", f"owner-{i}", ttl=30) for i in range(40)]
    holders = await asyncio.gather(*calls)
    assert len(set(holders)) == 1 and holders[0].startswith("owner-")


# rate limit


async def test_rate_allow_drops_excess_within_period(store: StateStore, clock: FakeClock) -> None:
    assert [await store.rate_allow("r", limit=3, period=10) for _ in range(5)] == [True, True, True, False, False]
    assert await store.rate_allow("other", limit=3, period=10)
    clock.advance(9.99)
    assert not await store.rate_allow("r", limit=3, period=10)
    clock.advance(0.01)
    assert [await store.rate_allow("r", limit=3, period=10) for _ in range(4)] == [True, True, True, False]


async def test_rate_allow_window_slides(store: StateStore, clock: FakeClock) -> None:
    assert await store.rate_allow("s", limit=2, period=10)  # t=0
    clock.advance(5)
    assert await store.rate_allow("s", limit=2, period=10)  # t=5
    clock.advance(1)
    assert not await store.rate_allow("s", limit=2, period=10)  # t=6: refused, and not counted
    clock.advance(4)
    assert await store.rate_allow("s", limit=2, period=10)  # t=10: the t=0 call left the window
    clock.advance(1)
    assert not await store.rate_allow("s", limit=2, period=10)  # t=11: t=5 and t=10 still inside
    clock.advance(4)
    assert await store.rate_allow("s", limit=2, period=10)  # t=15


async def test_rate_allow_under_concurrency_from_two_connections(new_store: StoreFactory) -> None:
    one, two = await new_store(), await new_store()
    calls = [(one if i % 2 else two).rate_allow("busy", limit=10, period=60) for i in range(60)]
    assert (await asyncio.gather(*calls)).count(True) == 10


# throttle


async def test_throttle_gives_distinct_ordered_slots_from_two_connections(new_store: StoreFactory) -> None:
    one, two = await new_store(), await new_store()
    calls = [(one if i % 2 else two).throttle_reserve("t", limit=10, period=1, burst=1) for i in range(200)]
    waits = sorted(await asyncio.gather(*calls))
    # Epoch-sized floats carry ~1e-7 s of rounding per slot; a millisecond is the precision that matters.
    assert waits == pytest.approx([i * 0.1 for i in range(200)], abs=1e-3)


async def test_throttle_default_burst_is_limit_then_spaced(store: StateStore, clock: FakeClock) -> None:
    waits = [await store.throttle_reserve("u", limit=5, period=10) for _ in range(8)]
    assert waits == pytest.approx([0, 0, 0, 0, 0, 2, 4, 6])
    assert await store.throttle_reserve("other", limit=5, period=10) == 0
    clock.advance(3)
    # Slots already handed out stay reserved: the next one follows the t=6 one.
    assert await store.throttle_reserve("u", limit=5, period=10) == pytest.approx(5)
    clock.advance(100)
    assert [await store.throttle_reserve("u", limit=5, period=10) for _ in range(5)] == [0, 0, 0, 0, 0]


async def test_throttle_rejects_bad_parameters(store: StateStore) -> None:
    with pytest.raises(ValueError, match="limit"):
        await store.throttle_reserve("x", limit=0, period=1)
    with pytest.raises(ValueError, match="period"):
        await store.throttle_reserve("x", limit=1, period=0)
    with pytest.raises(ValueError, match="burst"):
        await store.throttle_reserve("x", limit=1, period=1, burst=0)


# pacing


async def test_pace_spaces_sends_after_a_burst(store: StateStore) -> None:
    waits = [await store.pace("discord", limit=2, period=1) for _ in range(5)]
    assert waits == pytest.approx([0, 0, 0.5, 1.0, 1.5])
    assert await store.pace("slack", limit=2, period=1) == 0


async def test_block_holds_pace_on_every_connection(new_store: StoreFactory, clock: FakeClock) -> None:
    one, two = await new_store(), await new_store()
    await one.block("discord", until=clock.now + 30)
    await one.block("discord", until=clock.now + 10)  # an earlier deadline does not shorten the block
    await one.block("discord", until=clock.now - 5)  # nor does one in the past
    assert await two.pace("discord", limit=5, period=1) == pytest.approx(30)
    assert await two.pace("slack", limit=5, period=1) == 0
    clock.advance(31)
    assert await one.pace("discord", limit=5, period=1) == 0


async def test_blocked_for_tells_the_time_left(new_store: StoreFactory, clock: FakeClock) -> None:
    one, two = await new_store(), await new_store()
    assert await one.blocked_for("c") == 0
    await one.block("c", until=clock.now + 5)
    assert await two.blocked_for("c") == pytest.approx(5)
    assert await two.blocked_for("other") == 0
    clock.advance(6)
    assert await one.blocked_for("c") == 0


async def test_pace_after_block_keeps_order(store: StateStore, clock: FakeClock) -> None:
    await store.block("c", until=clock.now + 10)
    waits = [await store.pace("c", limit=1, period=2) for _ in range(3)]
    assert waits == pytest.approx([10, 12, 14])


async def test_pace_with_max_wait_reserves_only_near_slots(store: StateStore) -> None:
    waits = [await store.pace("c", limit=1, period=1, max_wait=1.5) for _ in range(4)]
    assert waits == pytest.approx([0, 1, 2, 2])  # the third and fourth were told 2s and reserved nothing
    assert await store.pace("c", limit=1, period=1) == pytest.approx(2)
    assert await store.pace("c", limit=1, period=1) == pytest.approx(3)


async def test_pace_with_max_wait_sees_a_block(store: StateStore, clock: FakeClock) -> None:
    await store.block("c", until=clock.now + 10)
    assert await store.pace("c", limit=5, period=1, max_wait=2) == pytest.approx(10)
    clock.advance(10)
    assert await store.pace("c", limit=5, period=1, max_wait=2) == 0


# digests


async def test_digest_collects_until_window_closes(store: StateStore, clock: FakeClock) -> None:
    adds = []
    for item in (b"one", b"two", b"three"):
        adds.append(await store.digest_add("space-1", item, window=300, max_items=50))
        clock.advance(10)
    assert adds == [
        DigestAdd(count=1, due_at=START + 300, full=False),
        DigestAdd(count=2, due_at=START + 300, full=False),
        DigestAdd(count=3, due_at=START + 300, full=False),
    ]
    assert await store.digest_due(START + 299.9) == []
    assert await store.digest_due(START + 300) == ["space-1"]
    assert await store.digest_take("space-1") == [b"one", b"two", b"three"]
    assert await store.digest_take("space-1") == []
    assert await store.digest_due(START + 1000) == []
    # The next add opens a fresh bucket with its own window.
    clock.now = START + 400
    assert await store.digest_add("space-1", b"four", window=300, max_items=50) == DigestAdd(1, START + 700, False)


async def test_digest_full_bucket_is_due_at_once_and_keeps_extra_items(store: StateStore, clock: FakeClock) -> None:
    await store.digest_add("k", b"\x00\xff", window=300, max_items=2)
    full = await store.digest_add("k", b"2", window=300, max_items=2)
    assert full == DigestAdd(count=2, due_at=START + 300, full=True)
    assert await store.digest_due(clock.now) == ["k"]
    assert (await store.digest_add("k", b"3", window=300, max_items=2)).count == 3
    assert await store.digest_take("k") == [b"\x00\xff", b"2", b"3"]


async def test_digest_due_lists_only_closed_windows(store: StateStore, clock: FakeClock) -> None:
    await store.digest_add("early", b"x", window=60, max_items=10)
    clock.advance(30)
    await store.digest_add("late", b"y", window=60, max_items=10)
    assert await store.digest_due(START + 60) == ["early"]
    assert sorted(await store.digest_due(START + 90)) == ["early", "late"]


async def test_digest_concurrent_adds_and_takes_lose_and_duplicate_nothing(new_store: StoreFactory) -> None:
    one, two = await new_store(), await new_store()
    items = [f"item-{i}".encode() for i in range(100)]
    adds = [(one if i % 2 else two).digest_add("d", item, window=60, max_items=1000) for i, item in enumerate(items)]
    counts = sorted(result.count for result in await asyncio.gather(*adds))
    assert counts == list(range(1, 101))
    taken = await asyncio.gather(one.digest_take("d"), two.digest_take("d"))
    assert sorted(taken[0] + taken[1]) == sorted(items)
    assert [] in taken


async def test_digest_peek_then_drop_keeps_items_added_in_between(store: StateStore, clock: FakeClock) -> None:
    for item in (b"a", b"b", b"c"):
        await store.digest_add("p", item, window=60, max_items=10)
    assert await store.digest_peek("p") == [b"a", b"b", b"c"]
    assert await store.digest_peek("p", limit=2) == [b"a", b"b"]
    clock.advance(60)
    assert await store.digest_due(clock.now) == ["p"]
    await store.digest_add("p", b"late", window=60, max_items=10)  # after the peek, before the drop
    assert await store.digest_drop("p", 3, window=60, max_items=10) == 1
    # What remains is a fresh bucket with its own window.
    assert await store.digest_due(clock.now) == []
    assert await store.digest_peek("p") == [b"late"]
    assert await store.digest_due(clock.now + 60) == ["p"]
    assert await store.digest_drop("p", 1, window=60, max_items=10) == 0
    assert await store.digest_peek("p") == []
    assert await store.digest_due(clock.now + 1000) == []
    assert (await store.digest_add("p", b"new", window=60, max_items=10)).count == 1


async def test_digest_drop_leaves_a_full_remainder_due_at_once(store: StateStore, clock: FakeClock) -> None:
    for i in range(5):
        await store.digest_add("f", str(i).encode(), window=60, max_items=2)
    assert await store.digest_drop("f", 2, window=60, max_items=2) == 3
    assert await store.digest_due(clock.now) == ["f"]
    assert await store.digest_peek("f", limit=2) == [b"2", b"3"]
    assert await store.digest_drop("f", 2, window=60, max_items=2) == 1
    assert await store.digest_due(clock.now) == []
    assert await store.digest_peek("absent") == []
    assert await store.digest_drop("absent", 3, window=60, max_items=2) == 0


# locks


async def test_lock_is_exclusive_renewable_and_released_by_owner_only(store: StateStore, clock: FakeClock) -> None:
    assert await store.acquire_lock("digest-flusher", "a", ttl=10)
    assert not await store.acquire_lock("digest-flusher", "b", ttl=10)
    assert await store.acquire_lock("other", "b", ttl=10)
    clock.advance(8)
    assert await store.acquire_lock("digest-flusher", "a", ttl=10)  # renewal runs to t=18
    await store.release_lock("digest-flusher", "b")  # not b's lock: no effect
    clock.advance(8)
    assert not await store.acquire_lock("digest-flusher", "b", ttl=10)
    await store.release_lock("digest-flusher", "a")
    assert await store.acquire_lock("digest-flusher", "b", ttl=10)


async def test_lock_expires(store: StateStore, clock: FakeClock) -> None:
    assert await store.acquire_lock("l", "a", ttl=5)
    clock.advance(5)
    assert await store.acquire_lock("l", "b", ttl=5)
    assert not await store.acquire_lock("l", "a", ttl=5)


async def test_lock_has_one_winner_across_connections(new_store: StoreFactory) -> None:
    one, two = await new_store(), await new_store()
    calls = [(one if i % 2 else two).acquire_lock("leader", f"owner-{i}", ttl=30) for i in range(20)]
    assert (await asyncio.gather(*calls)).count(True) == 1


# durability, expiry, lifecycle


async def test_state_survives_close_and_reopen(new_store: StoreFactory, clock: FakeClock) -> None:
    first = await new_store()
    keys = [f"evt-{i}" for i in range(300)]
    await asyncio.gather(*(first.mark_sent(key, ttl=3600) for key in keys))
    assert await first.first_seen("seen", window=60)
    assert await first.claim("claimed", "a", ttl=60) == "a"
    await first.digest_add("dig", b"kept", window=60, max_items=10)
    assert await first.acquire_lock("lock", "a", ttl=60)
    await first.throttle_reserve("thr", limit=1, period=10)
    await first.block("chan", until=clock.now + 20)
    await first.close()

    second = await new_store()
    assert await second.sent_many(keys) == set(keys)
    assert not await second.first_seen("seen", window=60)
    assert await second.claim("claimed", "b", ttl=60) == "a"
    assert not await second.acquire_lock("lock", "b", ttl=60)
    assert await second.throttle_reserve("thr", limit=1, period=10) == pytest.approx(10)
    assert await second.pace("chan", limit=1, period=1) == pytest.approx(20)
    assert await second.digest_take("dig") == [b"kept"]


async def test_purge_keeps_live_state(store: StateStore, clock: FakeClock) -> None:
    await store.mark_sent("short", ttl=1)
    await store.mark_sent("long", ttl=100)
    await store.digest_add("dig", b"x", window=10, max_items=5)
    clock.advance(2)
    removed = await store.purge_expired()
    if isinstance(store, SqliteStateStore):
        assert removed == 1
    assert await store.sent_many(["short", "long"]) == {"long"}
    assert await store.digest_take("dig") == [b"x"]


async def test_every_key_expires(new_store: StoreFactory, clock: FakeClock, tmp_path: Path) -> None:
    store = await new_store()
    await store.mark_sent("sent", ttl=60)
    await store.first_seen("seen", window=60)
    await store.claim("claim", "me", ttl=60)
    await store.rate_allow("rate", limit=5, period=60)
    await store.throttle_reserve("throttle", limit=5, period=60)
    await store.pace("chan", limit=5, period=60)
    await store.block("chan", until=clock.now + 60)
    await store.digest_add("digest", b"x", window=60, max_items=5)
    await store.digest_add("full", b"x", window=60, max_items=1)
    await store.acquire_lock("lock", "me", ttl=60)
    if isinstance(store, RedisStateStore):
        client = store.client
        keys = [key async for key in client.scan_iter(match=f"{store.prefix}*")]
        assert len(keys) >= 10
        ttls = {key: await client.pttl(key) for key in keys}
        assert [key for key, ttl in ttls.items() if ttl <= 0] == []
        return
    clock.advance(60 + 7 * 86400)
    await store.purge_expired()
    await store.close()
    with sqlite3.connect(tmp_path / "state" / "state.db") as conn:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        assert {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in tables
        } == dict.fromkeys(tables, 0)


async def test_digest_bucket_past_retention_is_gone(store: StateStore, clock: FakeClock) -> None:
    await store.digest_add("old", b"stale", window=10, max_items=5)
    clock.advance(10 + 7 * 86400)
    assert await store.digest_add("old", b"fresh", window=10, max_items=5) == DigestAdd(1, clock.now + 10, False)
    assert await store.digest_take("old") == [b"fresh"]


async def test_sqlite_purge_drops_expired_digests(tmp_path: Path, clock: FakeClock) -> None:
    async with SqliteStateStore(tmp_path / "s.db", clock=clock, purge_interval=float("inf")) as store:
        await store.digest_add("old", b"x", window=10, max_items=5)
        clock.advance(10 + 7 * 86400)
        assert await store.purge_expired() == 1 + 1  # the bucket and its item
        assert await store.digest_due(clock.now) == []


async def test_sqlite_purges_expired_rows_by_itself(tmp_path: Path, clock: FakeClock) -> None:
    async with SqliteStateStore(tmp_path / "s.db", clock=clock, purge_interval=1) as store:
        await store.mark_sent("short", ttl=1)
        await store.mark_sent("long", ttl=100)
        clock.advance(2)
        await store.first_seen("tick", window=100)  # the worker purges after this batch, before the next call
        assert await store.purge_expired() == 0
        assert await store.is_sent("long")


async def test_calls_before_open_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="not open"):
        await SqliteStateStore(tmp_path / "s.db").is_sent("k")
    with pytest.raises(RuntimeError, match="not open"):
        await RedisStateStore("redis://127.0.0.1:6379/0").is_sent("k")


async def test_a_redis_that_accepts_and_never_answers_fails_the_call_instead_of_holding_it() -> None:
    """A frozen host or a partition: the connection is open, nothing comes back. Every call is
    bounded (``command_timeout``), so a handler, its prefetch slot and shutdown are never held."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        await reader.read(1 << 16)  # reads the command, never answers

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        store = RedisStateStore(f"redis://127.0.0.1:{port}/0", command_timeout=0.5)
        started = asyncio.get_running_loop().time()
        with pytest.raises((TimeoutError, aioredis.TimeoutError)):
            await asyncio.wait_for(store.open(), timeout=30)  # the guard: without the bound this hangs
        assert asyncio.get_running_loop().time() - started < 10
        assert accepted, "the store never connected: the test tested nothing"
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_rejects_non_positive_durations(store: StateStore) -> None:
    with pytest.raises(ValueError, match="ttl"):
        await store.mark_sent("k", ttl=0)
    with pytest.raises(ValueError, match="window"):
        await store.first_seen("k", window=-1)
    with pytest.raises(ValueError, match="max_items"):
        await store.digest_add("k", b"x", window=1, max_items=0)


# open_state_store


async def test_open_state_store_relative_sqlite_path_creates_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_state_store("sqlite:///.router/state.db")
    assert isinstance(store, SqliteStateStore)
    async with store:
        await store.mark_sent("k", ttl=10)
    assert (tmp_path / ".router" / "state.db").is_file()


def test_open_state_store_absolute_and_memory_paths(tmp_path: Path) -> None:
    absolute = open_state_store(f"sqlite:///{tmp_path}/abs.db")
    assert isinstance(absolute, SqliteStateStore)
    assert absolute.path == f"{tmp_path}/abs.db"
    memory = open_state_store("sqlite:///:memory:")
    assert isinstance(memory, SqliteStateStore)
    assert memory.path == ":memory:"


async def test_open_state_store_memory_works(clock: FakeClock) -> None:
    async with open_state_store("sqlite:///:memory:", clock=clock) as store:
        assert await store.first_seen("k", window=5)
        assert not await store.first_seen("k", window=5)


def test_open_state_store_redis_url_uses_prefix() -> None:
    store = open_state_store("redis://:hunter2@127.0.0.1:6379/3", prefix="mine:")
    assert isinstance(store, RedisStateStore)
    assert store.prefix == "mine:"
    assert "hunter2" not in repr(store)


@pytest.mark.parametrize("url", ["postgres://admin:s3cret@db/x", "s3cret-no-scheme", "sqlite://s3cret@host/x", ""])
def test_open_state_store_rejects_unknown_urls_without_echoing_them(url: str) -> None:
    with pytest.raises(ValueError) as info:
        open_state_store(url)
    assert "s3cret" not in str(info.value)
    assert "sqlite:///" in str(info.value)
