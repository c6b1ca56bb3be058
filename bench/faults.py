"""Fault runs at full size: SIGKILLs of `router serve` mid-stream, and a channel outage.

    python bench/faults.py                       # 20,000 events, 5 kills; 30 s channel outage
    python bench/faults.py --events 3000 --kills 2 --outage 8     # the CI size
    python bench/faults.py --only crash --lease 0                 # compare: delivery leases off
    python bench/faults.py --only blip [--lease 0]                # broker drops mid-send (private node)

Needs RabbitMQ on amqp://guest:guest@127.0.0.1:5672/ (or BENCH_AMQP_URL). Prints the figures
(events, kills, lost, duplicated effects, duplicated transmissions, wall time), writes them to
bench/results/faults.json, and exits 1 if a delivery was lost or applied twice. The same runs,
smaller, are tests/test_faults.py; docs/guarantees.md explains the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fault_support import PrivateRabbit, Tally, run_broker_blip, run_channel_outage, run_crash

RESULTS = Path(__file__).resolve().parent / "results"


def _plain(value: Any) -> Any:
    if isinstance(value, Tally):
        return asdict(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _failures(name: str, result: dict[str, Any]) -> list[str]:
    problems = []
    if result["left_in_queues"]:
        problems.append(f"{name}: messages left in queues {result['left_in_queues']}")
    for channel, tally in result["tallies"].items():
        if tally.lost or tally.duplicated_effects or tally.bad_keys or tally.unexpected:
            problems.append(f"{name}/{channel}: {tally}")
    return problems


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--outage", type=float, default=30.0, help="seconds the failing channel answers 503")
    parser.add_argument("--seed", type=int, default=None, help="seed for the kill points")
    parser.add_argument("--only", choices=["crash", "outage", "blip"], default=None)
    parser.add_argument("--lease", type=float, default=None, help="ROUTER_DELIVERY_LEASE for the routers (0 = off)")
    args = parser.parse_args()
    amqp_url = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    if args.lease is not None:
        os.environ["ROUTER_DELIVERY_LEASE"] = str(args.lease)  # inherited by the router processes
    results: dict[str, Any] = {"lease": os.environ.get("ROUTER_DELIVERY_LEASE", "default")}
    problems: list[str] = []
    if args.only in (None, "crash"):
        with tempfile.TemporaryDirectory(prefix="faults-crash-") as root:
            crash = await run_crash(Path(root), amqp_url, events=args.events, kills=args.kills, seed=args.seed)
        tally = crash["tallies"]["hook"]
        print(
            f"crash: events={crash['events']} kills={crash['kills']} (at {crash['killed_at']}) lost={tally.lost} "
            f"duplicated_effects={tally.duplicated_effects} "
            f"duplicated_transmissions={tally.duplicated_transmissions} "
            f"retries_forced={crash['refused_first']} wall={crash['wall_seconds']}s"
        )
        results["crash"] = crash
        problems += _failures("crash", crash)
    if args.only in (None, "outage"):
        with tempfile.TemporaryDirectory(prefix="faults-outage-") as root:
            outage = await run_channel_outage(Path(root), amqp_url, outage=args.outage)
        before, during = outage["good_before"], outage["good_during"]
        print(
            f"channel outage: {args.outage:g}s, events={outage['events']} "
            f"bad lost={outage['tallies']['bad'].lost} refused={outage['refused_during_outage']} "
            f"last arrival {outage['bad_last_arrival_after_outage']}s after recovery; healthy channel "
            f"p50 {before['p50'] * 1000:.1f} -> {during['p50'] * 1000:.1f} ms, "
            f"p99 {before['p99'] * 1000:.1f} -> {during['p99'] * 1000:.1f} ms (before -> during); "
            f"wall={outage['wall_seconds']}s"
        )
        results["outage"] = outage
        problems += _failures("outage", outage)
    if args.only in (None, "blip"):
        rabbit = PrivateRabbit()
        try:
            await asyncio.to_thread(rabbit.start)
            with tempfile.TemporaryDirectory(prefix="faults-blip-") as root:
                blip = await run_broker_blip(Path(root), rabbit)
        finally:
            await asyncio.to_thread(rabbit.kill)
        tally = blip["tallies"]["hook"]
        print(
            f"broker blip during slow sends: events={blip['events']} lost={tally.lost} "
            f"duplicated_effects={tally.duplicated_effects} "
            f"duplicated_transmissions={tally.duplicated_transmissions} wall={blip['wall_seconds']}s"
        )
        results["blip"] = blip
        problems += _failures("blip", blip)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "faults.json").write_text(json.dumps(_plain(results), indent=2, default=str))
    for problem in problems:
        print(f"FAULTS INVALID: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
