"""The router's own cost per event, without a broker: events fed straight into the engine.

Run: ``python bench/profile_engine.py [--events 20000] [--rules 10] [--loop uvloop] [--profile]``

Builds the runtime from a generated config (a `null` channel from bench/router-bench-plugin,
SQLite state as `router serve` uses by default), then hands the engine N encoded events
through a stub transport with ``prefetch`` in flight, as the AMQP transport would, and
reports events/s and CPU microseconds per event. Everything the AMQP transport costs is left
out, so this is the part of the intake figure the router's own code is responsible for.
With ``--profile``, runs under cProfile and prints the functions with the most own time
(``--sort cumulative`` for inclusive time).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import shutil
import time
from typing import Any

import harness

from router.app import gc_tuning as heap
from router.engine.engine import Engine
from router.plugins.manager import Hooks, build_registry, get_plugin_manager
from router.runtime.runtime import build_runtime
from router.state import SqliteStateStore, open_state_store
from router.support.metrics import Metrics
from router.transports.base import Incoming, Transport


class DictState(SqliteStateStore):
    """``--state dict``: the sent ledger in a dict, no thread: what the store costs, by difference."""

    def __init__(self) -> None:
        super().__init__(":memory:")
        self.sent: dict[str, float] = {}

    async def is_sent(self, key: str) -> bool:
        return key in self.sent

    async def mark_sent(self, key: str, ttl: float) -> None:
        self.sent[key] = ttl
        self._leases.pop(key, None)  # as the real store does once the ledger answers


class StubTransport(Transport):
    """Acks and requeues are counted; nothing is published."""

    name = "stub"

    def __init__(self) -> None:
        self.acked = 0
        self.requeued = 0

    async def connect(self) -> None: ...
    async def start(self, handler: Any, *, prefetch: int) -> None: ...
    async def stop_consuming(self) -> None: ...
    async def close(self) -> None: ...

    @property
    def connected(self) -> bool:
        return True

    async def publish_event(self, body: bytes, **_: Any) -> None:
        raise AssertionError("nothing should be published")

    async def schedule_retry(self, record: bytes, **_: Any) -> float:
        raise AssertionError("nothing should be retried")

    async def dead_letter(self, body: bytes, **_: Any) -> None:
        raise AssertionError("nothing should be dead-lettered")

    async def dlq_list(self, limit: int = 100) -> list[Any]:
        return []

    async def dlq_replay(self, ids: Any, republish: Any) -> list[Any]:
        return []

    async def dlq_purge(self) -> int:
        return 0


async def run(args: argparse.Namespace) -> dict[str, float]:
    workspace = harness.make_workspace(
        broker={"url": ""},
        channels={"sink": {"type": "null", "expect": args.events}},
        rules=harness.tenant_rules(args.rules, channel="sink"),
    )
    try:
        pm = get_plugin_manager()
        registry = build_registry(pm)
        runtime = build_runtime(workspace.config, registry)
        heap.settle()  # as router serve does once it is built
        urls = {"sqlite": runtime.config.state.url, "memory": "sqlite:///:memory:", "redis": args.redis}
        state = DictState() if args.state == "dict" else open_state_store(urls[args.state])
        await state.open()
        transport = StubTransport()
        metrics = Metrics()
        engine = Engine(runtime, transport=transport, state=state, hooks=Hooks(pm, metrics=metrics), metrics=metrics)
        bodies = [harness.event_body(i) for i in range(args.events)]
        slots = asyncio.Semaphore(args.prefetch)

        async def ack() -> None:
            transport.acked += 1

        async def requeue() -> None:
            transport.requeued += 1

        async def one(body: bytes) -> None:
            try:
                incoming = Incoming(
                    kind="event",
                    body=body,
                    headers={},
                    routing_key="planet.completed",
                    content_type=harness.CLOUDEVENTS,
                    ack=ack,
                    requeue=requeue,
                )
                await engine.handle(incoming)
            finally:
                slots.release()

        tasks = set()
        profiler = cProfile.Profile() if args.profile else None
        started, cpu = time.perf_counter(), time.process_time()
        if profiler:
            profiler.enable()
        for body in bodies:
            await slots.acquire()
            task = asyncio.create_task(one(body))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        while tasks:
            await asyncio.gather(*list(tasks))
        if profiler:
            profiler.disable()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        await engine.close()
        await state.close()
        harness.check(transport.acked == args.events, f"{transport.acked} acked, expected {args.events}")
        if profiler:
            stats = pstats.Stats(profiler)
            stats.sort_stats(args.sort).print_stats(args.top)
        return {"events_per_s": args.events / elapsed, "cpu_us_per_event": cpu / args.events * 1e6}
    finally:
        shutil.rmtree(workspace.root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rules", type=int, default=10)
    parser.add_argument("--prefetch", type=int, default=256)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop")
    parser.add_argument("--state", choices=["sqlite", "memory", "dict", "redis"], default="sqlite")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    harness.ensure_plugin()
    if args.loop == "uvloop":
        import uvloop

        figures = uvloop.run(run(args))
    else:
        figures = asyncio.run(run(args))
    print(f"engine only: {figures['events_per_s']:,.0f} events/s, {figures['cpu_us_per_event']:,.0f} CPU us/event")


if __name__ == "__main__":
    main()
