"""A slow channel does not hold intake (docs/guarantees.md): against a real `router serve`, a
backlog for a webhook that answers slowly, then a few events for another rule and a healthy
webhook. The issue's scenario (300 events, 5 s answers, prefetch 256) scaled down with its shape
kept: more slow events than prefetch slots, the slow channel at its concurrency limit."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

from aiohttp import web

from tests import test_serve_embedded
from tests.fakes.http_sink import HttpSink
from tests.serve_support import RouterProcess
from tests.test_serve_embedded import embedded_rules, ids, post_events, setup_project

broker_section = test_serve_embedded.broker_section  # the fixture: embedded queue and RabbitMQ, prefetch 4

SLOW_EVENTS = 12  # three times the prefetch (4): the slow channel cannot hold every handler
SLOW_SECONDS = 1.0
SLOW_CONCURRENCY = 2
HEALTHY_EVENTS = 5


class SlowSink(HttpSink):
    """Answers 204 after ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.started = 0  # requests that arrived (answered or not)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.started += 1
        await asyncio.sleep(self.delay)
        return await super()._handle(request)


class TimedSink(HttpSink):
    """Notes when each request arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived: list[float] = []

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.arrived.append(time.monotonic())
        return await super()._handle(request)


async def test_a_slow_channel_does_not_delay_a_healthy_one_and_still_gets_every_event_once(
    tmp_path: Path, broker_section: str
) -> None:
    async with SlowSink(SLOW_SECONDS) as slow, TimedSink() as healthy:
        setup_project(
            tmp_path,
            embedded_rules(
                f"  slow: {{type: webhook, url: '{slow.url}', concurrency: {SLOW_CONCURRENCY}, timeout: 30s}}\n"
                f"  healthy: {{type: webhook, url: '{healthy.url}'}}",
                "  - {name: backlog, on: report.generated, template: note, channels: [slow]}\n"
                "  - {name: signup, on: user.signed_up, template: note, channels: [healthy]}",
                broker=broker_section,  # prefetch 4: far fewer slots than slow events
            ),
        )
        router = await RouterProcess(tmp_path).start()
        try:
            backlog = [{"type": "report.generated", "id": f"slow-{n}", "data": {"n": n}} for n in range(SLOW_EVENTS)]
            await post_events(router, backlog)
            # The slow channel is at its limit before the healthy events come.
            deadline = time.monotonic() + 10
            while slow.started < SLOW_CONCURRENCY:
                assert time.monotonic() < deadline, "the slow channel never reached its limit"
                await asyncio.sleep(0.05)

            posted = time.monotonic()
            await post_events(
                router, [{"type": "user.signed_up", "id": f"ok-{n}", "data": {"n": n}} for n in range(HEALTHY_EVENTS)]
            )
            await healthy.wait_for(HEALTHY_EVENTS, timeout=10)
            latency = max(healthy.arrived) - posted
            print(f"healthy latency behind the slow backlog: {latency * 1000:.0f} ms")
            assert latency < 1.0, f"healthy deliveries took {latency:.2f}s behind the slow backlog"

            # The slow channel still gets every event, exactly once.
            await slow.wait_for(SLOW_EVENTS, timeout=SLOW_EVENTS / SLOW_CONCURRENCY * SLOW_SECONDS + 20)
            await asyncio.sleep(SLOW_SECONDS * 2)  # room for a duplicate to show (none may)
            counts = Counter(ids(slow.requests))
            assert sorted(counts) == sorted(e["id"] for e in backlog)
            assert set(counts.values()) == {1}, counts
            assert sorted(ids(healthy.requests)) == [f"ok-{n}" for n in range(HEALTHY_EVENTS)]
        finally:
            await router.stop()
