"""Scenario 6, backlog: 200,000 events queued before the router starts.

Run: ``python bench/bench_backlog.py [--events 200000] [--rounds 1] [--quick]``

Each round queues N events in a fresh RabbitMQ queue, then starts a consumer and waits until
the backlog is drained, sampling the consumer's resident memory every half second (and
reading its peak, VmHWM, at the end):

- ``router``: `router serve --log-level WARNING`, 10 rules, ``null`` channel, SQLite state
  (one idempotency record per event: 200,000 rows written during the run);
- ``raw``: bench/raw_consumer.py, the bare aio-pika consumer of bench_intake.py, same queue
  settings and prefetch.

Prefetch (256) is what bounds the router's memory: the broker holds the backlog, the router
only ever has ``prefetch`` events in hand. Asserts every event was delivered once and the
queue, retry queue and dead-letter queue are empty at the end. Writes bench/results/backlog.json.
Targets: router peak RSS <= 250 MB, backlog fully drained.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

import harness
from harness import check, fmt


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="events in the backlog (default 200000)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of each consumer (default 1)")
    parser.add_argument("--prefetch", type=int, default=256)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 20000 events, 1 round")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders")
    args = parser.parse_args()
    if args.quick:
        args.events, args.rounds = 20_000, 1
    return args


class Sampler:
    """Samples a process's RSS every ``interval`` seconds while running."""

    def __init__(self, memory: Any, interval: float = 0.5) -> None:
        self.memory = memory
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        started = time.monotonic()
        while True:
            figures = self.memory()
            if "rss" in figures:
                self.samples.append((round(time.monotonic() - started, 1), figures["rss"]))
            await asyncio.sleep(self.interval)

    def __enter__(self) -> Sampler:
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()

    @property
    def max_rss(self) -> int:
        return max((rss for _, rss in self.samples), default=0)


async def router_round(n: int, args: argparse.Namespace) -> dict[str, Any]:
    topology = harness.Topology.fresh("backlog")
    workspace = None
    try:
        published = await harness.preload(topology, n)
        print(f"  queued {n:,} events ({published:,.0f}/s)", flush=True)
        workspace = harness.make_workspace(
            broker=topology.broker_config(args.prefetch),
            channels={"sink": {"type": "null", "expect": n}},
            rules=harness.tenant_rules(10, channel="sink"),
        )
        router = harness.RouterProcess(workspace, broker_url=harness.AMQP_URL, loop="auto")
        try:
            await router.wait_ready(timeout=120)
            with Sampler(router.memory) as sampler:
                await harness.wait_for(
                    lambda: workspace.report_total().count >= n,
                    timeout=120 + n / 100,
                    what=f"the backlog of {n} to drain",
                    alive=router.alive,
                )
            router.memory()
        finally:
            code = router.stop()
        check(code == 0, f"router exited with {code}:\n{router.log_tail()}")
        report = workspace.report_total()
        check(report.count == n, f"the null channel received {report.count} messages, expected {n}")
        depths = await topology.depths()
        check(all(v == 0 for v in depths.values()), f"messages left behind: {depths}")
        return {
            **report.figures(),
            "peak_rss": router.peak_rss,
            "max_sampled_rss": sampler.max_rss,
            "rss_samples": sampler.samples[:: max(1, len(sampler.samples) // 60)],
        }
    finally:
        await topology.delete()
        if workspace is not None and not args.keep:
            shutil.rmtree(workspace.root, ignore_errors=True)


async def raw_round(n: int, args: argparse.Namespace) -> dict[str, Any]:
    topology = harness.Topology.fresh("backlog-raw")
    folder = Path(harness.tempfile.mkdtemp(prefix="router-bench-backlog-"))
    try:
        published = await harness.preload(topology, n)
        print(f"  queued {n:,} events ({published:,.0f}/s)", flush=True)
        loop = "uvloop" if harness.uvloop_available() else "asyncio"
        state = await harness.run_to_completion(
            "raw",
            "raw_consumer.py",
            ["--queue", topology.queue, "--count", str(n), "--prefetch", str(args.prefetch), "--loop", loop],
            folder=folder,
            timeout=120 + n / 500,
        )
        report = harness.Report.from_dict(state)
        check(report.count == n, f"the raw consumer acknowledged {report.count} events, expected {n}")
        depths = await topology.depths()
        check(all(v == 0 for v in depths.values()), f"messages left behind: {depths}")
        return {**report.figures(), "peak_rss": state.get("peak_rss")}
    finally:
        await topology.delete()
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    harness.ensure_plugin()
    results: dict[str, list[dict[str, Any]]] = {"raw": [], "router": []}
    for round_number in range(1, args.rounds + 1):
        for name, function in (("raw", raw_round), ("router", router_round)):
            print(f"round {round_number}: {name}", flush=True)
            figures = await function(args.events, args)
            results[name].append(figures)
            print(
                f"round {round_number}: {name:6} drained {args.events:,} in {figures['seconds']:.0f} s "
                f"({fmt(figures['events_per_s'])} events/s), peak RSS {figures['peak_rss'] / 2**20:.1f} MB",
                flush=True,
            )
    summary, rows = harness.summarize(results, "raw")
    for name, row in zip(results, rows, strict=True):
        summary[name]["median_drain_s"] = harness.median([r["seconds"] for r in results[name]])
        row.insert(1, f"{summary[name]['median_drain_s']:.0f}")
    harness.print_table(
        f"Backlog: {args.events:,} events queued before start x {args.rounds} round(s), prefetch {args.prefetch}; "
        "base = raw",
        [harness.SUMMARY_HEADER[0], "drain s", *harness.SUMMARY_HEADER[1:]],
        rows,
    )
    peak = summary["router"]["peak_rss_mb"]
    met = peak <= 250
    print(f"target router peak RSS <= 250 MB and fully drained: {'MET' if met else 'MISSED'} ({peak:.1f} MB)")
    return {
        "events": args.events,
        "rounds": args.rounds,
        "prefetch": args.prefetch,
        "results": summary,
        "rounds_detail": results,
        "target": {"peak_rss_mb_max": 250, "drained": True, "met": met},
    }


def main() -> None:
    args = parse_args()
    document = harness.run_async(run(args))
    harness.write_results("backlog-quick" if args.quick else "backlog", document)


if __name__ == "__main__":
    main()
