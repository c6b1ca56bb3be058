"""Issue 15 item 5 at full size: a slow channel must not hold up a healthy one.

300 events for a webhook that answers after 5 s (channel `concurrency` 8, the default), then 5
events for another rule and a healthy webhook, on a `router serve` with the default prefetch
(256) on the embedded queue (``--amqp``: RabbitMQ). Prints how long after they were posted the
healthy deliveries arrived and how long the slow channel took to get every event, and fails
(exit 1) if a slow event was lost or delivered twice. tests/test_serve_slow_channel.py is the
same scenario scaled down.

    python bench/bench_slow_channel.py [--events 300] [--delay 5] [--amqp]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

from tests.serve_support import RouterProcess, delete_topology
from tests.test_serve_embedded import ids, post_events, setup_project
from tests.test_serve_slow_channel import SlowSink, TimedSink

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


async def run(events: int, delay: float, healthy_count: int, amqp: bool) -> int:
    names = {"exchange": f"bench-slow-{uuid.uuid4().hex[:8]}", "queue": f"bench-slow-{uuid.uuid4().hex[:8]}"}
    broker = f'{{url: "{AMQP_URL}", exchange: {names["exchange"]}, queue: {names["queue"]}}}' if amqp else "{}"
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        async with SlowSink(delay) as slow, TimedSink() as healthy:
            setup_project(
                root,
                f"""
version: 1
broker: {broker}
state: {{url: "sqlite:///state.db"}}
channels:
  slow: {{type: webhook, url: '{slow.url}', timeout: {delay * 4}s}}
  healthy: {{type: webhook, url: '{healthy.url}'}}
rules:
  - {{name: backlog, on: report.generated, template: note, channels: [slow]}}
  - {{name: signup, on: user.signed_up, template: note, channels: [healthy]}}
""",
            )
            router = await RouterProcess(root).start()
            try:
                started = time.monotonic()
                backlog = [{"type": "report.generated", "id": f"slow-{n}", "data": {"n": n}} for n in range(events)]
                for start in range(0, events, 100):
                    await post_events(router, backlog[start : start + 100])
                while slow.started < 8:
                    await asyncio.sleep(0.05)
                posted = time.monotonic()
                await post_events(
                    router,
                    [{"type": "user.signed_up", "id": f"ok-{n}", "data": {"n": n}} for n in range(healthy_count)],
                )
                await healthy.wait_for(healthy_count, timeout=120)
                latency = max(healthy.arrived) - posted
                await slow.wait_for(events, timeout=events / 8 * delay * 3 + 60)
                drained = time.monotonic() - started
                await asyncio.sleep(delay * 2)
                counts = Counter(ids(slow.requests))
            finally:
                await router.stop()
                if amqp:
                    await delete_topology(AMQP_URL, names)
    print(f"healthy deliveries arrived {latency * 1000:.0f} ms after they were posted")
    print(f"slow channel: {len(counts)} events in {drained:.1f} s ({events} / 8 at {delay:g} s each)")
    lost = events - len(counts)
    twice = sum(1 for n in counts.values() if n > 1)
    if lost or twice:
        print(f"BENCHMARK INVALID: {lost} lost, {twice} delivered more than once")
        return 1
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--delay", type=float, default=5.0)
    parser.add_argument("--healthy", type=int, default=5)
    parser.add_argument("--amqp", action="store_true")
    args = parser.parse_args()
    sys.exit(asyncio.run(run(args.events, args.delay, args.healthy, args.amqp)))


if __name__ == "__main__":
    main()
