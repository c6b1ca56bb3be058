"""Throughput of the state store's hot-path operations, SQLite (temp file) and Redis (if reachable).

Run: ``python bench/bench_state.py [--ops 5000] [--concurrency 200] [--redis redis://127.0.0.1:6379/0]``.
Prints one line per (backend, operation): operations per second, with ``concurrency`` callers
in flight (as a router with that prefetch would have) or one at a time (``sequential``).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from redis.exceptions import ConnectionError as RedisConnectionError

from router.state import StateStore
from router.state.redis import RedisStateStore
from router.state.sqlite import SqliteStateStore


async def _run(calls: int, concurrency: int, make: Callable[[int], Awaitable[object]]) -> float:
    """Make ``calls`` calls with at most ``concurrency`` in flight; return calls per second."""
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            await make(i)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(calls)))
    return calls / (time.perf_counter() - started)


async def bench(name: str, store: StateStore, ops: int, concurrency: int) -> None:
    run = uuid.uuid4().hex[:8]
    cases: list[tuple[str, int, Callable[[int], Awaitable[object]]]] = [
        ("mark_sent", concurrency, lambda i: store.mark_sent(f"{run}:{i}", ttl=3600)),
        ("mark_sent sequential", 1, lambda i: store.mark_sent(f"{run}:s{i}", ttl=3600)),
        ("is_sent", concurrency, lambda i: store.is_sent(f"{run}:{i}")),
        ("is_sent sequential", 1, lambda i: store.is_sent(f"{run}:{i}")),
        ("sent_many x100", concurrency, lambda i: store.sent_many([f"{run}:{i + j}" for j in range(100)])),
        ("first_seen", concurrency, lambda i: store.first_seen(f"{run}:{i % 50}", window=60)),
        ("throttle_reserve", concurrency, lambda i: store.throttle_reserve(f"{run}:{i % 10}", 100, 1.0)),
        ("digest_add", concurrency, lambda i: store.digest_add(f"{run}:{i % 20}", b"x" * 200, 60, 10**6)),
    ]
    for label, width, make in cases:
        count = ops if width > 1 else max(ops // 10, 100)
        rate = await _run(count, width, make)
        print(f"{name:7} {label:22} {rate:>10,.0f} ops/s  ({count} calls, {width} in flight)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        async with SqliteStateStore(Path(folder) / "state.db") as sqlite_store:
            await bench("sqlite", sqlite_store, args.ops, args.concurrency)

    prefix = f"bench-state:{uuid.uuid4().hex}:"
    redis_store = RedisStateStore(args.redis, prefix=prefix)
    try:
        await redis_store.open()
    except (OSError, RedisConnectionError) as exc:
        print(f"redis   skipped: not reachable ({exc})")
        return
    try:
        await bench("redis", redis_store, args.ops, args.concurrency)
    finally:
        keys = [key async for key in redis_store.client.scan_iter(match=f"{prefix}*")]
        if keys:
            await redis_store.client.delete(*keys)
        await redis_store.close()


if __name__ == "__main__":
    asyncio.run(main())
