"""Scenario 3, latency: from publish to arrival at a local HTTP sink, under a steady load.

Run: ``python bench/bench_latency.py [--rate 500] [--seconds 30] [--rounds 3] [--quick]``

An open-loop publisher (this process) publishes events at a fixed rate, each stamped with
``time.monotonic()`` just before it is handed to the client library; the sink (bench/sink.py,
its own process) stamps each arrival with the same clock (CLOCK_MONOTONIC is one clock for
the whole machine). Open loop: a publish never waits for an earlier one to be confirmed or
delivered, so a slow consumer shows as growing latency, not as a slower publisher.

- ``router``: `router serve --log-level WARNING`, a ``webhook`` channel to the sink (default
  options), SQLite state as shipped; started, warmed up with 200 events, then measured;
- ``raw``: bench/raw_consumer.py ``--post``: a bare aio-pika consumer that POSTs each body to
  the sink on one kept-alive aiohttp session and acks it: the floor of RabbitMQ plus one HTTP
  request, with no routing, rendering or idempotency record.

Asserts every event arrived exactly once. Reports p50, p99 and max (medians over rounds),
and the rate actually achieved; writes bench/results/latency.json.
Targets (router): p50 <= 5 ms, p99 <= 25 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import harness
from harness import check, fmt

WARMUP = 200


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=500.0, help="events per second (default 500)")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each measured run (default 30)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each consumer (default 3)")
    parser.add_argument("--log-level", default="WARNING", help="router --log-level (default WARNING)")
    parser.add_argument("--state", help="the router's state URL (default: a SQLite file, as shipped)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 5 s, 2 rounds")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds = 5.0, 2
    return args


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


async def publish_open_loop(topology: harness.Topology, *, rate: float, count: int, start: int = 0) -> float:
    """Publish ``count`` events at ``rate``/s on a fixed schedule; returns the rate achieved."""
    async with harness.Publisher(topology.exchange) as publisher:
        pending: set[asyncio.Future[Any]] = set()
        began = time.monotonic()
        for i in range(count):
            delay = began + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            body = harness.event_body(start + i, ts=time.monotonic())
            future = asyncio.ensure_future(publisher.exchange.publish(publisher.message(body), "planet.completed"))
            pending.add(future)
            future.add_done_callback(pending.discard)
        elapsed = time.monotonic() - began
        for result in await asyncio.gather(*pending):
            del result
    return count / elapsed if elapsed > 0 else float("nan")


async def wait_arrivals(sink: harness.Sink, count: int, timeout: float, alive: Any) -> None:
    state: dict[str, Any] = {}

    def arrived() -> bool:
        state.update(sink.stats())
        return int(state["distinct"]) >= count

    await harness.wait_for(arrived, timeout=timeout, what=f"{count} events at the sink", alive=alive)


def latency_figures(sink: harness.Sink, *, skip: int, count: int, who: str) -> dict[str, Any]:
    stats = sink.stats(arrivals=True)
    check(
        stats["distinct"] == count + skip,
        f"{who}: {stats['distinct']} distinct events arrived, expected {count + skip}",
    )
    check(stats["duplicates"] == 0, f"{who}: {stats['duplicates']} duplicates arrived")
    arrivals = sorted(stats["arrivals"])[skip:]  # by publish stamp: leave out the warm-up
    latencies = [(arrived - published) * 1000 for published, arrived in arrivals]
    return {
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies),
        "mean_ms": statistics.fmean(latencies),
        "count": len(latencies),
    }


async def router_round(sink: harness.Sink, args: argparse.Namespace, count: int) -> dict[str, Any]:
    topology = harness.Topology.fresh("latency")
    workspace = None
    try:
        await topology.declare()
        sink.reset()
        workspace = harness.make_workspace(
            broker=topology.broker_config(),
            channels={"hook": {"type": "webhook", "url": sink.url("/router")}},
            rules=harness.tenant_rules(10, channel="hook"),
            state_url=args.state,
        )
        router = harness.RouterProcess(workspace, broker_url=harness.AMQP_URL, log_level=args.log_level, loop="auto")
        try:
            await router.wait_ready()
            await publish_open_loop(topology, rate=args.rate, count=WARMUP)
            await wait_arrivals(sink, WARMUP, 60, router.alive)
            achieved = await publish_open_loop(topology, rate=args.rate, count=count, start=WARMUP)
            await wait_arrivals(sink, WARMUP + count, 120, router.alive)
        finally:
            code = router.stop()
        check(code == 0, f"router exited with {code}:\n{router.log_tail()}")
        figures = latency_figures(sink, skip=WARMUP, count=count, who="router")
        depths = await topology.depths()
        check(all(v == 0 for v in depths.values()), f"router: messages left behind: {depths}")
        return {**figures, "achieved_rate": achieved}
    finally:
        await topology.delete()
        if workspace is not None and not args.keep:
            shutil.rmtree(workspace.root, ignore_errors=True)


async def raw_round(sink: harness.Sink, args: argparse.Namespace, count: int, folder: Path) -> dict[str, Any]:
    topology = harness.Topology.fresh("latency-raw")
    out = folder / "raw.json"
    try:
        await topology.declare()
        sink.reset()
        loop = "uvloop" if harness.uvloop_available() else "asyncio"
        arguments = ["--queue", topology.queue, "--count", str(WARMUP + count), "--loop", loop]
        arguments += ["--post", sink.url("/raw"), "--connections", "8", "--out", str(out)]
        process = harness.python_process("raw", "raw_consumer.py", arguments, cwd=folder)
        try:
            await harness.wait_for(lambda: Path(str(out) + ".ready").exists(), timeout=30, what="the raw consumer")
            await publish_open_loop(topology, rate=args.rate, count=WARMUP)
            await wait_arrivals(sink, WARMUP, 60, process.alive)
            achieved = await publish_open_loop(topology, rate=args.rate, count=count, start=WARMUP)
            await harness.wait_for(lambda: not process.alive(), timeout=120, what="the raw consumer to finish")
        finally:
            code = process.stop()
        check(code == 0, f"raw consumer exited with {code}:\n{process.log_tail()}")
        check(json.loads(out.read_text())["count"] == WARMUP + count, "raw: not every event was acknowledged")
        figures = latency_figures(sink, skip=WARMUP, count=count, who="raw")
        return {**figures, "achieved_rate": achieved}
    finally:
        await topology.delete()
        for path in (out, Path(str(out) + ".ready")):
            path.unlink(missing_ok=True)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    harness.ensure_plugin()
    count = int(args.rate * args.seconds)
    folder = Path(harness.tempfile.mkdtemp(prefix="router-bench-latency-"))
    sink = harness.Sink(folder)
    results: dict[str, list[dict[str, Any]]] = {"raw": [], "router": []}
    try:
        await sink.wait_ready()
        for round_number in range(1, args.rounds + 1):
            for name in ("raw", "router"):
                if name == "raw":
                    figures = await raw_round(sink, args, count, folder)
                else:
                    figures = await router_round(sink, args, count)
                results[name].append(figures)
                print(
                    f"round {round_number}: {name:6} p50 {figures['p50_ms']:.1f} ms  p99 {figures['p99_ms']:.1f} ms  "
                    f"max {figures['max_ms']:.1f} ms  at {figures['achieved_rate']:.0f} events/s",
                    flush=True,
                )
    finally:
        sink.stop()
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    summary: dict[str, dict[str, Any]] = {}
    rows = []
    for name, rounds in results.items():
        summary[name] = {
            key: harness.median([r[key] for r in rounds]) for key in ("p50_ms", "p99_ms", "max_ms", "achieved_rate")
        }
        summary[name]["rounds"] = rounds
    for name in results:
        figures = summary[name]
        rows.append(
            [
                name,
                fmt(figures["p50_ms"], 1),
                fmt(figures["p99_ms"], 1),
                fmt(figures["max_ms"], 1),
                f"{figures['p50_ms'] / summary['raw']['p50_ms']:.2f}x",
                f"{figures['p99_ms'] / summary['raw']['p99_ms']:.2f}x",
                fmt(figures["achieved_rate"]),
            ]
        )
    harness.print_table(
        f"Latency, publish to arrival: {args.rate:g} events/s for {args.seconds:g} s x {args.rounds} rounds "
        f"(medians of the rounds), router --log-level {args.log_level}; base = raw",
        ["consumer", "p50 ms", "p99 ms", "max ms", "p50 vs base", "p99 vs base", "published ev/s"],
        rows,
    )
    router = summary["router"]
    met = {"p50": router["p50_ms"] <= 5.0, "p99": router["p99_ms"] <= 25.0}
    for key, limit in (("p50", 5), ("p99", 25)):
        print(f"target router {key} <= {limit} ms: {'MET' if met[key] else 'MISSED'} ({router[key + '_ms']:.1f} ms)")
    return {
        "rate": args.rate,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "log_level": args.log_level,
        "results": summary,
        "target": {"p50_ms_max": 5.0, "p99_ms_max": 25.0, "met": met},
    }


def main() -> None:
    args = parse_args()
    document = harness.run_async(run(args))
    name = "latency" if args.rate == 500 else f"latency-{args.rate:g}"
    harness.write_results(f"{name}-quick" if args.quick else name, document)


if __name__ == "__main__":
    main()
