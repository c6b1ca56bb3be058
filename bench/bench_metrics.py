"""Per-call cost of the router's metrics: router.support.metrics against prometheus_client, same run.

Run: ``python bench/bench_metrics.py [--calls 200000] [--rounds 7]`` (``--quick`` for a smoke
run). Prints CPU nanoseconds per call (``time.process_time``, median of the rounds, rounds
alternating between the two) and the ratio old/new, and writes bench/results/metrics.json.

``old`` is what router/support/metrics.py used before: prometheus_client's Counter, Gauge and
Histogram with ``labels()`` answered from a dict of children after the first call; ``new`` is
:class:`router.support.metrics.Metrics`. Both are built with the same names, labels and buckets. The
``event`` row is the sequence of updates the engine makes for one event with one delivery.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry

from router.support.metrics import Counter, Gauge, LabelledCounter, LabelledHistogram, Metrics

RESULTS = Path(__file__).resolve().parent / "results" / "metrics.json"


def old_metrics() -> Any:
    """The same metrics as prometheus_client's classes, with the old ``labels()`` cache."""
    registry = CollectorRegistry()
    old = SimpleNamespace(registry=registry)
    for attr, fast in vars(Metrics()).items():
        made: Any
        if isinstance(fast, Counter):
            made = prometheus_client.Counter(fast._name, fast._documentation, registry=registry)
        elif isinstance(fast, Gauge):
            made = prometheus_client.Gauge(fast._name, fast._documentation, registry=registry)
        elif isinstance(fast, LabelledCounter):
            made = prometheus_client.Counter(fast._name, fast._documentation, fast._labelnames, registry=registry)
        elif isinstance(fast, LabelledHistogram):
            made = prometheus_client.Histogram(
                fast._name, fast._documentation, fast._labelnames, buckets=fast._buckets.bounds, registry=registry
            )
        else:
            continue
        if fast._labelnames:
            _remember_children(made)
        setattr(old, attr, made)
    return old


def _remember_children(metric: Any) -> None:
    children: dict[object, Any] = {}
    make = metric.labels

    def labels(*values: Any, **named: Any) -> Any:
        key = (values, tuple(sorted(named.items()))) if named else values
        child = children.get(key)
        if child is None:
            child = children[key] = make(*values, **named)
        return child

    metric.labels = labels


def calls(m: Any) -> dict[str, Callable[[], None]]:
    """One closure per kind of call the router makes."""

    def event() -> None:
        m.in_flight.inc()
        m.events_received.labels("event").inc()
        m.events_decoded.inc()
        m.rules_matched.labels("orders").inc()
        m.delivery_latency.labels("chat").observe(0.0031)
        m.deliveries.labels("chat", "ok").inc()
        m.in_flight.dec()

    return {
        "counter.inc": lambda: m.events_decoded.inc(),
        "labels(a).inc": lambda: m.events_received.labels("event").inc(),
        "labels(a,b).inc": lambda: m.deliveries.labels("chat", "ok").inc(),
        "gauge.inc+dec": lambda: (m.in_flight.inc(), m.in_flight.dec()),
        "histogram.observe 3ms": lambda: m.delivery_latency.labels("chat").observe(0.0031),
        "histogram.observe 20s": lambda: m.delivery_latency.labels("chat").observe(20.0),
        "event (7 updates)": event,
    }


def cost_ns(call: Callable[[], None], count: int) -> float:
    """CPU nanoseconds per call, the loop's own cost taken off."""
    loop = range(count)
    started = time.process_time_ns()
    for _ in loop:
        call()
    spent = time.process_time_ns() - started
    started = time.process_time_ns()
    for _ in loop:
        _nothing()
    empty = time.process_time_ns() - started
    return max(spent - empty, 0) / count


def _nothing() -> None:
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.calls, args.rounds = 20_000, 3
    sides = {"old": calls(old_metrics()), "new": calls(Metrics())}
    names = list(sides["new"])
    figures: dict[str, dict[str, list[float]]] = {name: {"old": [], "new": []} for name in names}
    for _ in range(args.rounds):
        for name in names:
            for side in ("old", "new"):  # alternate, so machine noise hits both
                figures[name][side].append(cost_ns(sides[side][name], args.calls))
    rows = []
    print(f"{'call':<24}{'old ns':>10}{'new ns':>10}{'old/new':>10}")
    for name in names:
        old, new = statistics.median(figures[name]["old"]), statistics.median(figures[name]["new"])
        rows.append({"call": name, "old_ns": old, "new_ns": new, "ratio": old / new, "rounds": figures[name]})
        print(f"{name:<24}{old:>10.0f}{new:>10.0f}{old / new:>10.2f}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
                "python": sys.version.split()[0],
                "prometheus_client": prometheus_client.__version__
                if hasattr(prometheus_client, "__version__")
                else None,
                "machine": platform.machine(),
                "calls": args.calls,
                "rounds": args.rounds,
                "clock": "time.process_time_ns",
                "rows": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
