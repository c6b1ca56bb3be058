"""Activity store at scale: 1,000,000 events written through the recorder's batches, the store
kept within ``max_bytes`` by the same pruning `router serve` runs, and the activity list timed.

Run: ``python bench/bench_activity.py [--events 1000000] [--max-bytes 268435456] [--url sqlite:///...]``

Each event is what a delivered event records: the event row (envelope and data), one rule verdict
and one attempt with the message as sent. Events are spread over the last ``--span`` (default 24h)
and written in batches of 5,000, with ``prune()`` every 50,000 (the recorder prunes every 10 s).
Prints the store's size against max_bytes after every prune and the median and worst latency of
the list queries the CLI and the console make (default page, filters, a cursor page, counts over
7 days). Target: within max_bytes throughout; every list query under 200 ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from router.activity.query import open_store, parse_filter
from router.activity.recorder import build_batch
from router.core.delivery import Delivery
from router.core.events import Event
from router.core.message import Message, Outcome


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--max-bytes", type=int, default=256 * 2**20)
    parser.add_argument("--span", type=float, default=86400.0, help="seconds the events are spread over")
    parser.add_argument("--url", default=None, help="store URL (default: a SQLite file in a temporary folder)")
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--queries-only", action="store_true", help="only time the queries on the store at --url")
    return parser.parse_args()


def items_for(n: int, at: float) -> list[tuple[Any, ...]]:
    event = Event(
        type=f"order.{'paid' if n % 10 else 'refunded'}",
        id=f"evt-{n:08d}",
        source="shop",
        time=datetime.fromtimestamp(at, UTC),
        data={"order": n, "user": f"user-{n % 5000}", "amount": n % 977, "currency": "EUR"},
        subject=f"order-{n}",
    )
    message = Message(f"Order {n} paid", f"user-{n % 5000} paid {n % 977} EUR", payload={"embeds": [{"title": "x"}]})
    delivery = Delivery(event, "paid", "discord" if n % 2 else "hook", "webhook", message)
    outcome = Outcome.sent("HTTP 204") if n % 50 else Outcome.permanent("HTTP 400 Bad Request")
    action = "sent" if n % 50 else "dead"
    return [
        ("e", at, event, 240, "none", "amqp", "bench:1"),
        ("v", at, event.id, "paid", "fired", ""),
        ("a", at, delivery, outcome, action, 0.0123, None),
    ]


def timed(store: Any, params: dict[str, str]) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    answer = store.list_events(parse_filter(params))
    return (time.perf_counter() - started) * 1000, answer


def main() -> None:
    args = parse_args()
    folder = Path(tempfile.mkdtemp(prefix="router-bench-activity-"))
    url = args.url or f"sqlite:///{folder / 'activity.db'}"
    store = open_store(url)
    store.open()
    now = time.time()
    start = now - args.span
    sizes: list[int] = [store.size_bytes()]
    written_started = time.perf_counter()
    for first in range(0, 0 if args.queries_only else args.events, args.batch):
        items: list[tuple[Any, ...]] = []
        for n in range(first, min(args.events, first + args.batch)):
            items += items_for(n, start + args.span * n / args.events)
        store.write(build_batch(items))
        if (first + args.batch) % 50_000 == 0:
            store.prune(time.time(), 7 * 86400, args.max_bytes)
            sizes.append(store.size_bytes())
            print(f"{first + args.batch:>9} events written, store {sizes[-1] / 2**20:7.1f} MiB", flush=True)
    store.prune(time.time(), 7 * 86400, args.max_bytes)
    sizes.append(store.size_bytes())
    write_s = time.perf_counter() - written_started
    file_bytes = getattr(store, "file_bytes", lambda: None)()
    kept = store._query("SELECT count(*) FROM activity_events")[0][0]
    queries = {
        "default (1h, 50)": {"since": "1h"},
        "outcome=dead 24h": {"since": "24h", "outcome": "dead"},
        "type=order.refunded 24h": {"since": "24h", "type": "order.refunded"},
        "channel=hook 1h": {"since": "1h", "channel": "hook"},
        "channel=hook 7d": {"since": "7d", "channel": "hook"},
        "channel with no event 7d": {"since": "7d", "channel": "nobody"},
        "rule=paid 1h": {"since": "1h", "rule": "paid"},
        "rule=paid 7d": {"since": "7d", "rule": "paid"},
        "rule=paid outcome=dead 7d": {"since": "7d", "rule": "paid", "outcome": "dead"},
        "rule with no event 7d": {"since": "7d", "rule": "nobody"},
        "q=event id": {"since": "7d", "q": f"evt-{args.events - 10:08d}"},
        "7d, counts over all": {"since": "7d"},
    }
    latencies: dict[str, list[float]] = {}
    for name, params in queries.items():
        for _ in range(5):
            ms, answer = timed(store, params)
            latencies.setdefault(name, []).append(ms)
        if name == "default (1h, 50)" and answer["next"]:
            for _ in range(5):
                ms, _answer = timed(store, {**params, "before": answer["next"]})
                latencies.setdefault("next page (cursor)", []).append(ms)
    store.close()
    print()
    print(
        f"{args.events} events written in {write_s:.0f}s ({args.events / write_s:.0f}/s), max_bytes {args.max_bytes / 2**20:.0f} MiB"
    )
    print(f"store size: largest after a prune {max(sizes) / 2**20:.1f} MiB, final {sizes[-1] / 2**20:.1f} MiB")
    if file_bytes is not None:
        print(f"files on disk (db + wal + shm): {file_bytes / 2**20:.1f} MiB")
    print(f"events kept: {kept}")
    worst = 0.0
    for name, values in latencies.items():
        worst = max(worst, max(values))
        print(f"  {name:28} median {statistics.median(values):7.1f} ms  worst {max(values):7.1f} ms")
    within = max(sizes) <= args.max_bytes
    print(
        f"target within max_bytes: {'MET' if within else 'MISSED'}; list under 200 ms: {'MET' if worst < 200 else 'MISSED'}"
    )
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    (results / "activity.json").write_text(
        json.dumps(
            {
                "events": args.events,
                "max_bytes": args.max_bytes,
                "largest_size": max(sizes),
                "final_size": sizes[-1],
                "latency_ms": {k: {"median": statistics.median(v), "worst": max(v)} for k, v in latencies.items()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
