"""The cost of recording rejected messages: a flood of poison through the engine, activity on vs off.

Run: ``python bench/bench_rejected.py [--messages 2000] [--rounds 3] [--concurrency 32]``

Each round hands ``--messages`` undecodable messages (distinct bytes) to ``Engine.handle``
in-process, ``--concurrency`` at a time, on the embedded queue (each is dead-lettered to its
SQLite file, as `router serve` does; the engine's warning per message is silenced in both arms).
One warm-up round of each is not counted. The baseline is the same engine with activity off
(``NullRecorder``); rounds alternate, so machine noise hits both. Prints the median messages/s
of each and their ratio, and, with activity on, the largest the recorder's buffer grew and what
was written. Recording a rejection is an append to a bounded buffer on the loop; what the ratio
shows is mostly the writer thread's CPU (building rows, SQLite), which on a small machine
competes with the loop, as it does for every recorded event.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from pathlib import Path

from router.activity.recorder import NullRecorder, Recorder
from router.activity.sqlite_store import SqliteActivityStore
from router.activity.store import Filter
from router.engine.engine import Engine
from router.plugins.manager import Hooks, build_registry, get_plugin_manager
from router.runtime.runtime import build_runtime
from router.state import open_state_store
from router.support.metrics import Metrics
from router.transports.base import Incoming
from router.transports.embedded import EmbeddedTransport

RULES = """version: 1
channels: {out: {type: console}}
rules: [{name: r, on: a.b, template: t, channels: [out]}]
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--capacity", type=int, default=100_000, help="activity.buffer")
    return parser.parse_args()


async def one_round(root: Path, args: argparse.Namespace, *, activity: bool, offset: int) -> tuple[float, int, int]:
    """Messages/s of one round, the recorder's largest buffer and the rejections it wrote."""
    (root / "templates").mkdir(parents=True, exist_ok=True)
    (root / "templates" / "t.j2").write_text("{% block title %}t{% endblock %}")
    (root / "rules.yaml").write_text(RULES)
    pm = get_plugin_manager(load_entry_points=False)
    runtime = build_runtime(root / "rules.yaml", build_registry(pm))
    metrics = Metrics()
    state = open_state_store(f"sqlite:///{root / 'state.db'}")
    await state.open()
    transport = EmbeddedTransport(root / "queue.db")
    await transport.connect()
    store = SqliteActivityStore(root / "activity.db")
    recorder: NullRecorder = (
        Recorder(store, metrics=metrics, transport="embedded", capacity=args.capacity) if activity else NullRecorder()
    )
    if isinstance(recorder, Recorder):
        await recorder.start()
    engine = Engine(runtime, transport=transport, state=state, hooks=Hooks(pm, metrics=metrics), metrics=metrics)
    engine.activity = recorder
    peak = 0
    slots = asyncio.Semaphore(args.concurrency)

    async def handle(n: int) -> None:
        nonlocal peak
        async with slots:
            body = b"\xff poison %d" % (offset + n)
            await engine.handle(Incoming(kind="event", body=body, routing_key="a.b"))
            if isinstance(recorder, Recorder):
                peak = max(peak, len(recorder._buffer))

    started = time.perf_counter()
    await asyncio.gather(*(handle(n) for n in range(args.messages)))
    elapsed = time.perf_counter() - started
    written = 0
    if isinstance(recorder, Recorder):
        await recorder.flush()
        written = store.list_events(Filter(since=0, limit=1))["counts"]["rejected"]
        await recorder.close()
    await engine.close()
    await transport.close()
    await state.close()
    return args.messages / elapsed, peak, written


async def main() -> None:
    args = parse_args()
    logging.disable(logging.WARNING)  # the same line per message in both arms: not what is measured
    on: list[float] = []
    off: list[float] = []
    peaks: list[int] = []
    with tempfile.TemporaryDirectory(prefix="bench-rejected-") as tmp:
        for round_ in range(-1, args.rounds):  # round -1: warm-up
            for activity in (False, True) if round_ % 2 else (True, False):
                root = Path(tmp) / f"r{round_}-{int(activity)}"
                rate, peak, written = await one_round(root, args, activity=activity, offset=round_ * args.messages)
                if round_ < 0:
                    continue
                (on if activity else off).append(rate)
                if activity:
                    peaks.append(peak)
                    assert written == args.messages, f"wrote {written} of {args.messages} rejections"
                print(f"round {round_ + 1} activity {'on ' if activity else 'off'}: {rate:,.0f} msg/s")
    ratio = statistics.median(on) / statistics.median(off)
    print(f"median activity off: {statistics.median(off):,.0f} msg/s")
    print(f"median activity on:  {statistics.median(on):,.0f} msg/s  (ratio {ratio:.2f})")
    print(f"largest recorder buffer: {max(peaks)} records (capacity {args.capacity})")


if __name__ == "__main__":
    asyncio.run(main())
