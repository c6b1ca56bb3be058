"""Scenario 2, delivery: the router against the consumer a user would write by hand.

Run: ``python bench/bench_delivery.py [--events 3000] [--rounds 3] [--quick]``

Each round queues N events in a fresh RabbitMQ queue, then starts a consumer that delivers
every one of them to a local HTTP sink (bench/sink.py, its own process); the rate is taken at
the sink, from the first to the last distinct event to arrive:

- ``router``: `router serve --log-level WARNING`, 10 rules, one matching each event, whose
  channel is a ``webhook`` posting to the sink (default options: concurrency 8, JSON body);
  SQLite state as shipped (an idempotency record per delivery);
- ``naive``: bench/naive_consumer.py, the seed's pattern in Python: an aio-pika consumer
  (same queue settings and prefetch) that per message builds an apprise object, renders the
  Jinja template, awaits ``async_notify`` (apprise's ``json://`` to the same sink) and acks.

With ``--apprise``, also ``router-apprise``: the router with an ``apprise`` channel (the same
``json://`` URL as the naive consumer; one apprise object for the channel, sends on the
channel's thread pool), to show what building it once is worth on the same library.

Rounds alternate naive and router. Asserts the sink saw every event exactly once (no loss,
no duplicate) and that nothing is left in the queue, the retry queue or the dead-letter
queue. Prints medians and the ratio; writes bench/results/delivery.json.
Target: router >= 5x the naive consumer's events/s.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

import harness
from harness import check, fmt

NAIVE_TEMPLATE = """\
{{ data.user.name }} finished planet {{ data.planet.name }} (difficulty {{ data.planet.difficulty }}).
id={{ event.id }} ts={{ data.ts }}
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000, help="events per round (default 3000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each consumer (default 3)")
    parser.add_argument("--prefetch", type=int, default=256, help="broker.prefetch, the same for both (default 256)")
    parser.add_argument("--concurrency", type=int, default=8, help="the webhook channel's concurrency (default 8)")
    parser.add_argument(
        "--apprise",
        action="store_true",
        help="also run the router with an `apprise` channel (json:// to the sink) instead of `webhook`",
    )
    parser.add_argument("--log-level", default="WARNING", help="router --log-level (default WARNING)")
    parser.add_argument("--profile", action="store_true", help="py-spy the router's last round")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 500 events, 2 rounds")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders")
    args = parser.parse_args()
    if args.quick:
        args.events, args.rounds = 500, 2
    return args


def sink_figures(stats: dict[str, Any], n: int, who: str) -> dict[str, Any]:
    check(stats["distinct"] == n, f"{who}: the sink received {stats['distinct']} distinct events, expected {n}")
    check(stats["duplicates"] == 0, f"{who}: the sink received {stats['duplicates']} duplicates")
    check(stats["unparsed"] == 0, f"{who}: the sink received {stats['unparsed']} requests without an event id")
    return {"events_per_s": harness.rate(n, stats["first"], stats["last"]), "seconds": stats["last"] - stats["first"]}


async def router_round(
    n: int, sink: harness.Sink, args: argparse.Namespace, profile: Path | None, *, channel: str = "webhook"
) -> dict[str, Any]:
    topology = harness.Topology.fresh("delivery")
    workspace = None
    if channel == "webhook":
        spec = {"type": "webhook", "url": sink.url("/router"), "concurrency": args.concurrency}
    else:  # the apprise channel: one apprise object for the channel, sends on its thread pool
        spec = {"type": "apprise", "url": sink.url("/router-apprise").replace("http://", "json://")}
        spec["concurrency"] = args.concurrency
    try:
        await harness.preload(topology, n)
        sink.reset()
        workspace = harness.make_workspace(
            broker=topology.broker_config(args.prefetch),
            channels={"hook": spec},
            rules=harness.tenant_rules(10, channel="hook"),
        )
        router = harness.RouterProcess(
            workspace, broker_url=harness.AMQP_URL, log_level=args.log_level, loop="auto", profile=profile
        )
        try:
            await router.wait_ready()
            cpu = harness.CpuWatch(router.router_pid())
            stats: dict[str, Any] = {}

            def delivered() -> bool:
                stats.update(sink.stats())
                return cpu.observe(stats["distinct"], n)

            await harness.wait_for(delivered, timeout=120 + n / 50, what=f"{n} events at the sink", alive=router.alive)
            memory = router.memory()
        finally:
            code = router.stop()
        check(code == 0, f"router exited with {code}:\n{router.log_tail()}")
        figures = sink_figures(sink.stats(), n, "router")
        depths = await topology.depths()
        check(all(v == 0 for v in depths.values()), f"router: messages left behind: {depths}")
        report = harness.Report(count=n, first=0.0, last=1.0, cpu_first=cpu.cpu_first, cpu_last=cpu.cpu_last)
        return {**figures, "cpu_us_per_event": report.cpu_us_per_event, "peak_rss": router.peak_rss, **memory}
    finally:
        await topology.delete()
        if workspace is not None and not args.keep:
            shutil.rmtree(workspace.root, ignore_errors=True)


async def naive_round(n: int, sink: harness.Sink, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    topology = harness.Topology.fresh("naive")
    try:
        await harness.preload(topology, n)
        sink.reset()
        state = await harness.run_to_completion(
            "naive",
            "naive_consumer.py",
            [
                "--queue",
                topology.queue,
                "--count",
                str(n),
                "--prefetch",
                str(args.prefetch),
                "--apprise",
                sink.url("/naive").replace("http://", "json://"),
                "--templates",
                str(folder),
            ],
            folder=folder,
            timeout=120 + n / 5,
        )
        check(state["count"] == n, f"naive: acknowledged {state['count']} events, expected {n}")
        figures = sink_figures(sink.stats(), n, "naive")
        depths = await topology.depths()
        check(all(v == 0 for v in depths.values()), f"naive: messages left behind: {depths}")
        report = harness.Report.from_dict(state)
        return {
            **figures,
            "cpu_us_per_event": report.cpu_us_per_event,
            "peak_rss": state.get("peak_rss"),
            "failures": state.get("failures"),
        }
    finally:
        await topology.delete()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    harness.ensure_plugin()
    folder = Path(harness.tempfile.mkdtemp(prefix="router-bench-delivery-"))
    (folder / "naive.j2").write_text(NAIVE_TEMPLATE)
    sink = harness.Sink(folder)
    results: dict[str, list[dict[str, Any]]] = {"naive": [], "router": []}
    if args.apprise:
        results["router-apprise"] = []
    try:
        await sink.wait_ready()
        for round_number in range(1, args.rounds + 1):
            naive = await naive_round(args.events, sink, args, folder)
            results["naive"].append(naive)
            print(f"round {round_number}: naive  {fmt(naive['events_per_s'])} events/s", flush=True)
            profile = (
                harness.RESULTS / "profile-delivery-router.txt"
                if args.profile and round_number == args.rounds
                else None
            )
            router = await router_round(args.events, sink, args, profile)
            results["router"].append(router)
            print(f"round {round_number}: router {fmt(router['events_per_s'])} events/s", flush=True)
            if args.apprise:
                figures = await router_round(args.events, sink, args, None, channel="apprise")
                results["router-apprise"].append(figures)
                print(f"round {round_number}: router-apprise {fmt(figures['events_per_s'])} events/s", flush=True)
    finally:
        sink.stop()
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    summary, rows = harness.summarize(results, "naive")
    ratio = summary["router"]["ratio_to_baseline"]
    harness.print_table(
        f"Delivery to a local HTTP sink: {args.events} events x {args.rounds} rounds, prefetch {args.prefetch}, "
        f"webhook concurrency {args.concurrency}, router --log-level {args.log_level}; base = naive",
        harness.SUMMARY_HEADER,
        rows,
    )
    met = ratio >= 5.0
    print(f"target router >= 5x naive: {'MET' if met else 'MISSED'} ({ratio:.1f}x)")
    return {
        "events": args.events,
        "rounds": args.rounds,
        "prefetch": args.prefetch,
        "webhook_concurrency": args.concurrency,
        "log_level": args.log_level,
        "results": summary,
        "target": {"router_vs_naive_min": 5.0, "met": met},
    }


def main() -> None:
    args = parse_args()
    document = harness.run_async(run(args))
    harness.write_results("delivery-quick" if args.quick else "delivery", document)


if __name__ == "__main__":
    main()
