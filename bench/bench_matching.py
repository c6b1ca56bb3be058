"""Matching throughput: the compiled RuleIndex against plain scans of the same rules, same run.

Run: ``python bench/bench_matching.py [--rules 10000] [--types 200] [--events 20000] [--rounds 5]``
(``--quick`` for a smoke run). Prints a table of median events/s per matcher and writes the
figures to bench/results/matching.json.

The synthetic config is shaped like a large multi-tenant rules.yaml: most rules route one
event type for one tenant (``data.tenant: t42``), some add thresholds, tiers or regexes, some
use ``domain.entity.*``, ``domain.*.action`` or ``domain.**`` patterns, a few ``**`` rules
audit everything, and a few tenant rules ``stop``. Matchers:

- ``index``: :class:`RuleIndex` with its plans warm (steady state of a running router);
- ``index-cold``: a fresh index per round, so every type's plan is built on first sight;
- ``scan``: :func:`naive_match`, the plain scan (oracle of the tests);
- ``scan-compiled``: a scan with patterns and conditions precompiled, to show what the
  index gains beyond compilation.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from router.config.models import Rule
from router.core.events import Event
from router.core.patterns import compile_pattern
from router.matching.codegen import compile_conditions
from router.matching.index import RuleIndex, naive_match

DOMAINS = ["billing", "user", "planet", "space", "order", "ship", "team", "auth", "report", "media"]
ENTITIES = ["item", "account", "invoice", "session", "task", "crew", "fleet", "badge", "file", "plan"]
ACTIONS = ["created", "updated", "completed", "deleted", "failed", "archived", "shared", "viewed"]
TIERS = ["free", "pro", "gold", "platinum"]
COUNTRIES = ["fr", "de", "us", "jp", "br", "in"]
RESULTS = Path(__file__).resolve().parent / "results" / "matching.json"

Matcher = Callable[[Event], list[Rule]]


def event_types(count: int) -> list[str]:
    types = [f"{d}.{e}.{a}" for d in DOMAINS for e in ENTITIES for a in ACTIONS]
    if count > len(types):
        raise SystemExit(f"at most {len(types)} event types")
    return random.Random(1).sample(types, count)


def make_rules(count: int, types: list[str], tenants: int, rng: random.Random) -> list[Rule]:
    rules: list[Rule] = []

    def add(on: str | list[str], when: dict[str, Any], stop: bool = False) -> None:
        rules.append(
            Rule.model_validate(
                {"name": f"rule-{len(rules)}", "on": on, "when": when, "channels": ["ops"], "stop": stop}
            )
        )

    for _ in range(3):
        add("**", {})  # audit
    while len(rules) < count:
        kind = rng.random()
        tenant = {"data.tenant": f"t{rng.randrange(tenants)}"}
        event_type = rng.choice(types)
        domain, entity, action = event_type.split(".")
        if kind < 0.55:  # per-tenant routing of one type
            add(event_type, tenant, stop=rng.random() < 0.05)
        elif kind < 0.70:  # per-tenant with a threshold
            add(event_type, {**tenant, "data.amount": {"gte": rng.choice([10, 100, 500])}})
        elif kind < 0.78:  # per-tenant alerts over a family of types
            pattern = rng.choice([f"{domain}.{entity}.*", f"{domain}.*.{action}", f"{domain}.**"])
            add(pattern, {**tenant, "data.tier": {"in": rng.sample(TIERS, 2)}})
        elif kind < 0.92:  # per-tenant, per-country
            add(event_type, {**tenant, "data.country": {"not_in": rng.sample(COUNTRIES, 2)}})
        elif kind < 0.985:  # tenant-independent rules on one type
            threshold = rng.randrange(900, 1000, 5)
            flag = rng.choice(["vip", "beta", "churn"])
            choices: list[dict[str, Any]] = [
                {"data.tier": {"in": rng.sample(TIERS, 2)}, "data.amount": {"gt": threshold}},
                {"data.user.email": {"regex": r"@example\.(com|org)$"}},
                {"data.flags": {"contains": flag}},
                {"data.amount": {"gte": threshold}},
            ]
            add(event_type, rng.choice(choices))
        else:  # tenant-independent rules over families of types
            pattern = rng.choice([f"{domain}.**", f"*.*.{action}", f"{domain}.{entity}.*"])
            flag = rng.choice(["vip", "beta", "churn"])
            add(pattern, {"data.amount": {"gte": rng.randrange(950, 1000, 10)}, "data.flags": {"contains": flag}})
    return rules


def make_events(count: int, types: list[str], tenants: int, rng: random.Random) -> list[Event]:
    events = []
    for i in range(count):
        data: dict[str, Any] = {
            "tenant": f"t{rng.randrange(tenants)}",
            "amount": rng.randrange(1000),
            "tier": rng.choice(TIERS),
            "country": rng.choice(COUNTRIES),
            "user": {"id": rng.randrange(10**6), "email": f"u{i}@{rng.choice(['example.com', 'mail.net'])}"},
            "flags": rng.sample(["vip", "beta", "new", "churn"], rng.randrange(3)),
        }
        events.append(Event(type=rng.choice(types), id=f"e{i}", source="bench", time=datetime.now(UTC), data=data))
    return events


def compiled_scan(rules: Sequence[Rule]) -> Matcher:
    compiled = [([compile_pattern(p) for p in r.on], compile_conditions(r.when), r) for r in rules]

    def match(event: Event) -> list[Rule]:
        fired = []
        for patterns, check, rule in compiled:
            if any(p(event.type) for p in patterns) and check(event):
                fired.append(rule)
                if rule.stop:
                    break
        return fired

    return match


def measure(matcher: Matcher, events: Sequence[Event]) -> tuple[float, float]:
    """Events per second of ``matcher`` over ``events``: by the wall clock, and by CPU time.

    CPU time leaves out the time the process waited for a core, so it is the steadier figure
    on a shared machine; the wall clock is what a dedicated router would see.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    for event in events:
        matcher(event)
    return len(events) / (time.perf_counter() - wall), len(events) / (time.process_time() - cpu)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=10_000)
    parser.add_argument("--types", type=int, default=200)
    parser.add_argument("--tenants", type=int, default=500)
    parser.add_argument("--events", type=int, default=20_000, help="events per round for the index")
    parser.add_argument("--scan-events", type=int, default=200, help="events per round for the plain scan")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="a fast smoke run (fewer events and rounds)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.scan_events, args.rounds = 2_000, 30, 3

    rng = random.Random(42)
    types = event_types(args.types)
    rules = make_rules(args.rules, types, args.tenants, rng)
    events = make_events(args.events, types, args.tenants, rng)
    scan_events = events[: args.scan_events]

    started = time.perf_counter()
    index = RuleIndex(rules)
    build_seconds = time.perf_counter() - started
    scan = compiled_scan(rules)

    # The matchers must agree before their speed means anything.
    for event in scan_events:
        expected = naive_match(rules, event)
        if index.match(event) != expected or scan(event) != expected:
            raise SystemExit(f"matchers disagree on event {event.id} ({event.type})")
    candidates = statistics.mean(len(index.candidates(t)) for t in types)
    fired = statistics.mean(len(index.match(e)) for e in events)

    # Warm up to the steady state of a running router: every type seen often enough for its
    # plan to be generated (RuleIndex's compile_after, 16 by default).
    for _ in range(-(-20 * args.types // len(events))):
        measure(index.match, events)
    compiled_events = scan_events
    runs: dict[str, tuple[Callable[[], tuple[float, float]], int]] = {
        "index": (lambda: measure(index.match, events), len(events)),
        # A fresh index each round: every type's plan is built, then generated, on the way.
        "index-cold": (lambda: measure(RuleIndex(rules).match, events), len(events)),
        "scan": (lambda: measure(lambda e: naive_match(rules, e), scan_events), len(scan_events)),
        "scan-compiled": (lambda: measure(scan, compiled_events), len(compiled_events)),
    }
    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, (run, _size) in runs.items():
            by_wall, by_cpu = run()
            wall[name].append(by_wall)
            cpu[name].append(by_cpu)
    medians = {name: statistics.median(values) for name, values in wall.items()}
    cpu_medians = {name: statistics.median(values) for name, values in cpu.items()}
    ratio = medians["index"] / medians["scan"]
    report = {
        "benchmark": "matching",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "load_average_1m": round(os.getloadavg()[0], 2),
        "rules": args.rules,
        "event_types": args.types,
        "tenants": args.tenants,
        "rounds": args.rounds,
        "events_per_round": {name: size for name, (_, size) in runs.items()},
        "index_build_seconds": round(build_seconds, 4),
        "mean_candidate_rules_per_type": round(candidates, 1),
        "mean_rules_fired_per_event": round(fired, 2),
        "events_per_second": {name: round(value) for name, value in medians.items()},
        "events_per_cpu_second": {name: round(value) for name, value in cpu_medians.items()},
        "rounds_events_per_second": {name: [round(v) for v in values] for name, values in wall.items()},
        "index_vs_scan": round(ratio, 1),
        "index_vs_compiled_scan": round(medians["index"] / medians["scan-compiled"], 1),
        "targets": {"index_vs_scan>=50": ratio >= 50, "index_events_per_second>=100000": medians["index"] >= 100_000},
    }

    print(f"{args.rules} rules over {args.types} event types, {args.tenants} tenants; medians of {args.rounds} rounds")
    print(f"load average {report['load_average_1m']} on {report['machine']}")
    print(
        f"index built in {build_seconds:.2f}s; {candidates:.1f} candidate rules per type; {fired:.2f} fired per event"
    )
    print(f"{'matcher':<15}{'events/s (wall)':>17}{'events/s (CPU)':>16}{'events/round':>14}")
    for name, value in medians.items():
        print(f"{name:<15}{value:>17,.0f}{cpu_medians[name]:>16,.0f}{report['events_per_round'][name]:>14,}")
    print(f"index / scan = {ratio:,.0f}x   index / compiled scan = {report['index_vs_compiled_scan']:,.0f}x")
    for target, met in report["targets"].items():
        print(f"target {target}: {'met' if met else 'NOT met'}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")
    return report


if __name__ == "__main__":
    main()
