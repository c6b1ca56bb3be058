"""The floor of the embedded benchmark: a bare HTTP-to-SQLite queue with nothing on top.

Run by bench_embedded.py as its own process:
``python bench/raw_ingest.py --port P --count N --db FILE [--loop uvloop] --out F``.

``POST /events`` takes one event or a JSON array of them, like the router's endpoint: it
parses the body, inserts one row per event in one transaction (SQLite, WAL,
``synchronous=FULL``, as the embedded queue) and answers 202 once committed. A consumer in
the same process reads the rows back in pages of 256, decodes each with ``json.loads`` and
deletes them (one transaction per page). All database work runs on one thread, as in the
router. No rules, no templates, no idempotency record: what durable intake through HTTP and
SQLite costs in Python before any routing.

Writes ``{count, first, last, cpu_first, cpu_last, peak_rss}`` to ``--out`` once ``count``
events were consumed, then exits.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from aiohttp import web


class Queue:
    def __init__(self, path: str) -> None:
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self.path = path
        self.conn: sqlite3.Connection | None = None

    def _open(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, body BLOB NOT NULL)")
        self.conn = conn

    async def run(self, function: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, function, *args)

    def insert(self, bodies: list[bytes]) -> None:
        assert self.conn is not None
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.executemany("INSERT INTO events(body) VALUES (?)", [(b,) for b in bodies])
        self.conn.execute("COMMIT")

    def fetch(self, cursor: int, limit: int) -> list[tuple[int, bytes]]:
        assert self.conn is not None
        return self.conn.execute(
            "SELECT id, body FROM events WHERE id > ? ORDER BY id LIMIT ?", (cursor, limit)
        ).fetchall()

    def delete(self, ids: list[int]) -> None:
        assert self.conn is not None
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute(f"DELETE FROM events WHERE id IN ({','.join('?' * len(ids))})", ids)
        self.conn.execute("COMMIT")


async def serve(args: argparse.Namespace) -> dict[str, Any]:
    queue = Queue(args.db)
    await queue.run(queue._open)
    wake = asyncio.Event()
    done = asyncio.Event()
    state: dict[str, Any] = {"count": 0, "first": None, "last": None, "cpu_first": None, "cpu_last": None}

    async def ingest(request: web.Request) -> web.Response:
        payload = json.loads(await request.read())
        items = payload if isinstance(payload, list) else [payload]
        await queue.run(queue.insert, [json.dumps(item, separators=(",", ":")).encode() for item in items])
        wake.set()
        return web.json_response({"ids": [item.get("id") for item in items]}, status=202)

    async def consume() -> None:
        cursor = 0
        while True:
            rows = await queue.run(queue.fetch, cursor, 256)
            if not rows:
                wake.clear()
                await wake.wait()
                continue
            for _, body in rows:
                json.loads(body)
            cursor = rows[-1][0]
            await queue.run(queue.delete, [row[0] for row in rows])
            now, cpu = time.monotonic(), time.process_time()
            if state["first"] is None:
                state["first"], state["cpu_first"] = now, cpu
            state["last"], state["cpu_last"] = now, cpu
            state["count"] += len(rows)
            if state["count"] >= args.count:
                done.set()
                return

    app = web.Application(client_max_size=64 * 2**20)
    app.router.add_post("/events", ingest)
    app.router.add_get("/readyz", lambda _: web.json_response({"ready": True}))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.port).start()
    consumer = asyncio.create_task(consume())
    await done.wait()
    await consumer
    await runner.cleanup()
    return state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        state = uvloop.run(serve(args))
    else:
        state = asyncio.run(serve(args))
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                state["peak_rss"] = int(line.split()[1]) * 1024
    Path(args.out).write_text(json.dumps(state))


if __name__ == "__main__":
    main()
