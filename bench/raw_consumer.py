"""The raw ceiling: a bare aio-pika consumer that only decodes each event and acknowledges it.

Run by the benchmarks as a separate process, like the router:
``python bench/raw_consumer.py --queue Q --count N [--prefetch 256] [--loop uvloop] --out F``.

It consumes the queue the router's own transport declared (same durable classic queue, same
prefetch, manual acknowledgements), parses each body with ``json.loads`` and acks it: the most
a Python aio-pika consumer can do with these settings, before doing any work. With
``--post URL`` it also POSTs each body to URL on one kept-alive aiohttp session before the ack
(the floor of the latency benchmark: transport plus one HTTP request, no routing).

Writes ``{count, first, last, cpu_first, cpu_last, peak_rss}`` as JSON to ``--out`` once ``count`` messages were
acknowledged (stamps are ``time.monotonic()``, CPU times ``time.process_time()``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import aio_pika
from aio_pika.abc import AbstractIncomingMessage


async def consume(args: argparse.Namespace) -> dict[str, object]:
    connection = await aio_pika.connect(args.url)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=args.prefetch)
    queue = await channel.declare_queue(args.queue, passive=True)
    done = asyncio.Event()
    state: dict[str, float | int | None] = {"count": 0, "first": None, "last": None, "cpu_first": None}
    session = None
    if args.post:
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.connections))

    async def on_message(message: AbstractIncomingMessage) -> None:
        json.loads(message.body)
        if session is not None:
            async with session.post(args.post, data=message.body) as response:
                await response.read()
        await message.ack()
        now, cpu = time.monotonic(), time.process_time()
        if state["first"] is None:
            state["first"], state["cpu_first"] = now, cpu
        state["last"], state["cpu_last"] = now, cpu
        state["count"] = int(state["count"] or 0) + 1
        if state["count"] >= args.count:
            done.set()

    await queue.consume(on_message, no_ack=False)
    Path(args.out + ".ready").write_text("ready")
    await done.wait()
    if session is not None:
        await session.close()
    await connection.close()
    return state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--queue", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--prefetch", type=int, default=256)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--post", help="POST each body to this URL before acknowledging it.")
    parser.add_argument("--connections", type=int, default=64, help="HTTP connection pool size with --post.")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        state = uvloop.run(consume(args))
    else:
        state = asyncio.run(consume(args))
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                state["peak_rss"] = int(line.split()[1]) * 1024
    Path(args.out).write_text(json.dumps(state))


if __name__ == "__main__":
    main()
