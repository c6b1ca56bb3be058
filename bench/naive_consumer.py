"""The baseline of the delivery benchmark: the consumer a user would write by hand.

Run by bench_delivery.py as its own process:
``python bench/naive_consumer.py --queue Q --count N --apprise json://127.0.0.1:PORT/naive --templates DIR --out F``.

The seed's pattern, in Python: an aio-pika consumer (same queue, same prefetch as the router)
that, for each message, decodes the JSON, builds an ``apprise.Apprise`` object and adds the
target URL, renders the Jinja template (one ``Environment`` for the process, so the template
is compiled once), awaits ``apprise.async_notify`` and acknowledges the message, or requeues
it if apprise reports a failure. No idempotency record, no retries beyond the requeue.

Writes ``{count, first, last, cpu_first, cpu_last, failures, peak_rss}`` as JSON to ``--out``
once ``count`` messages were acknowledged.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from pathlib import Path

import aio_pika
import apprise
import jinja2
from aio_pika.abc import AbstractIncomingMessage


async def consume(args: argparse.Namespace) -> dict[str, object]:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(args.templates), autoescape=False)
    connection = await aio_pika.connect(args.url)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=args.prefetch)
    queue = await channel.declare_queue(args.queue, passive=True)
    done = asyncio.Event()
    state: dict[str, float | int | None] = {"count": 0, "first": None, "last": None, "failures": 0}

    async def on_message(message: AbstractIncomingMessage) -> None:
        event = json.loads(message.body)
        notifier = apprise.Apprise()
        notifier.add(args.apprise)
        body = env.get_template(args.template).render(event=event, data=event["data"])
        title = f"{event['type']}: {event['data']['user']['name']}"
        if not await notifier.async_notify(body=body, title=title):
            state["failures"] = int(state["failures"] or 0) + 1
            await message.nack(requeue=True)
            return
        await message.ack()
        now, cpu = time.monotonic(), time.process_time()
        if state["first"] is None:
            state["first"], state["cpu_first"] = now, cpu
        state["last"], state["cpu_last"] = now, cpu
        state["count"] = int(state["count"] or 0) + 1
        if state["count"] >= args.count:
            done.set()

    await queue.consume(on_message, no_ack=False)
    await done.wait()
    await connection.close()
    return state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--queue", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--prefetch", type=int, default=256)
    parser.add_argument("--apprise", required=True, help="apprise URL, e.g. json://127.0.0.1:9100/naive")
    parser.add_argument("--templates", required=True, help="folder of the template")
    parser.add_argument("--template", default="naive.j2")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    logging.getLogger("apprise").setLevel(logging.WARNING)
    state = asyncio.run(consume(args))
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                state["peak_rss"] = int(line.split()[1]) * 1024
    Path(args.out).write_text(json.dumps(state))


if __name__ == "__main__":
    main()
