"""Flow control on the real services: several router nodes on one RabbitMQ queue with Redis state.

Each node is what one `router serve` process is (its own engine, AMQP connection and Redis
connection); running them in one test process keeps the test fast and lets it read every
node's metrics. The only fake is the remote service: a local webhook that enforces a rate
limit the way Discord does.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from router.state.redis import RedisStateStore
from router.transports.amqp import AmqpTransport
from tests.engine_support import Harness, until
from tests.fakes.rate_limited import RateLimitedWebhook
from tests.flow_support import TimedChannel, event, got, rules_yaml, start_node

pytestmark = pytest.mark.integration

Cluster = Callable[..., Awaitable[list[Harness]]]


@pytest.fixture(autouse=True)
def _reset() -> None:
    TimedChannel.reset()


@pytest.fixture
async def cluster(tmp_path: Path, rabbitmq_url: str, redis_url: str) -> AsyncIterator[Cluster]:
    """``await cluster(rules_yaml, nodes=3)``: that many router nodes on one queue and one Redis prefix."""
    queue = f"test-flow-{uuid.uuid4().hex[:10]}"
    exchange = f"{queue}.events"
    prefix = f"test-flow:{uuid.uuid4().hex}:"
    running: list[Harness] = []
    publishers: list[AmqpTransport] = []

    async def start(rules: str, nodes: int = 1) -> list[Harness]:
        started = []
        for _ in range(nodes):
            transport = AmqpTransport(rabbitmq_url, exchange=exchange, queue=queue, reconnect_interval=0.1)
            state = RedisStateStore(redis_url, prefix=prefix)
            node = await start_node(tmp_path, rules, state=state, transport=transport)
            running.append(node)
            started.append(node)
        return started

    async def publisher() -> AmqpTransport:
        """What an application publishes with: a connection of its own, not consuming."""
        transport = AmqpTransport(rabbitmq_url, exchange=exchange, queue=queue)
        await transport.connect()
        publishers.append(transport)
        return transport

    start.publisher = publisher  # type: ignore[attr-defined]
    yield start
    for node in running:
        if node.transport.connected:
            await node.close()
    for transport in publishers:
        await transport.close()
    cleaner = AmqpTransport(rabbitmq_url, exchange=exchange, queue=queue)
    await cleaner.connect()
    await cleaner.delete_topology()
    await cleaner.close()
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def publish_all(target: Harness | AmqpTransport, bodies: list[tuple[str, bytes]]) -> None:
    """Publish concurrently, a hundred at a time (each publish waits for RabbitMQ's confirm)."""
    transport = target.transport if isinstance(target, Harness) else target
    for start in range(0, len(bodies), 100):
        chunk = bodies[start : start + 100]
        await asyncio.gather(*(transport.publish_event(body, routing_key=key) for key, body in chunk))


def total(nodes: list[Harness], read: Callable[[Harness], float]) -> float:
    return sum(read(node) for node in nodes)


def accounted(payloads: list[Any]) -> Counter[str]:
    """Every event id the webhook's messages stand for: single events, digests and summaries."""
    ids: Counter[str] = Counter()
    for payload in payloads:
        meta = payload["meta"]
        if "folded" in meta:
            ids.update(meta["folded"]["events"])
        elif "digest" in meta:
            ids.update(meta["digest"]["events"])
        else:
            ids.update([meta["event_id"]])
    return ids


# ------------------------------------------------------------------ the burst


async def run_burst(
    cluster: Cluster, *, events: int, nodes: int, limit: int, period: str, seconds: float
) -> dict[str, float]:
    async with RateLimitedWebhook(limit=limit, period=float(period.rstrip("s"))) as hook:
        channel = (
            f'  discord: {{type: webhook, url: "{hook.url}", rate_limit: {{limit: {limit}, period: {period}}},'
            " fold_when_saturated: true}"
        )
        rules = rules_yaml(channel, "  - {name: burst, on: '**', template: one, channels: [discord]}")
        # The burst lands in the queue faster than any router drains it: publish it all, then start.
        ids = [f"burst-{i}" for i in range(events)]
        publisher = await cluster.publisher()  # type: ignore[attr-defined]
        began = time.monotonic()
        await publish_all(publisher, [("deploy.step", event("deploy.step", i, n=n)) for n, i in enumerate(ids)])
        published = time.monotonic() - began
        began = time.monotonic()
        started = await cluster(rules, nodes=nodes)
        await until(
            lambda: total(started, lambda n: n.metrics.events_received.labels("event")._value.get()) >= events,
            timeout=seconds,
        )
        consumed = time.monotonic() - began
        await until(lambda: sum(accounted([a.payload for a in hook.accepted]).values()) >= events, timeout=seconds)
        finished = time.monotonic() - began
        counts = accounted([a.payload for a in hook.accepted])
        assert counts == Counter(ids), "every event exactly once, as a message or inside a summary"
        assert hook.refused == [], f"{len(hook.refused)} requests answered 429"
        for node in started:
            assert await node.transport.dlq_list() == []
        arrivals = [a.at for a in hook.accepted]
        busiest = max(sum(1 for t in arrivals if s <= t < s + float(period.rstrip("s"))) for s in arrivals)
        assert busiest <= limit
        summaries = [a for a in hook.accepted if "folded" in a.payload["meta"]]
        return {
            "events": events,
            "nodes": nodes,
            "messages": len(hook.accepted),
            "summaries": len(summaries),
            "refused_429": len(hook.refused),
            "publish_s": round(published, 2),
            "consumed_s": round(consumed, 2),
            "all_delivered_s": round(finished, 2),
            "folded": total(started, lambda n: n.metrics.channel_folded.labels("discord")._value.get()),
            "busiest_window": busiest,
        }


async def test_a_burst_of_2000_to_a_discord_webhook_ends_in_a_few_messages_without_a_429(cluster) -> None:
    figures = await run_burst(cluster, events=2000, nodes=3, limit=5, period="2s", seconds=60)
    print("burst figures:", figures)
    # A few individual messages at the channel's pace while the burst drains, then summaries.
    assert figures["messages"] < 30
    assert figures["summaries"] >= 1


@pytest.mark.slow
async def test_soak_20000_events_through_three_nodes_to_a_discord_webhook(cluster) -> None:
    figures = await run_burst(cluster, events=20_000, nodes=3, limit=5, period="2s", seconds=300)
    print("soak figures:", figures)


# ------------------------------------------------------------------ several processes as one


async def test_three_nodes_share_dedupe_rate_limit_throttle_and_digest(cluster) -> None:
    channels = "\n".join(f"  {name}: {{type: timed}}" for name in ("d", "r", "s", "g"))
    rules = "\n".join(
        [
            "  - {name: once, on: d, template: one, channels: [d], dedupe: {key: '{{ data.user }}', window: 1h}}",
            "  - {name: capped, on: r, template: one, channels: [r], rate_limit: {limit: 5, period: 1h}}",
            "  - {name: slow, on: s, template: one, channels: [s], throttle: {limit: 10, period: 1s, burst: 1}}",
            "  - {name: sum, on: g, template: many, channels: [g], digest: {window: 2s, max_events: 1000}}",
        ]
    )
    nodes = await cluster(rules_yaml(channels, rules), nodes=3)
    for node in nodes:  # a slow machine must not see the digest's window close mid-publish
        await node.engine.flow.flusher.close()
    began = time.monotonic()
    bodies = [("g", event("g", f"g{i}", n=i)) for i in range(30)]
    bodies += [("d", event("d", f"d{i}", user=i % 10, n=i)) for i in range(30)]
    bodies += [("r", event("r", f"r{i}", n=i)) for i in range(30)]
    bodies += [("s", event("s", f"s{i}", n=i)) for i in range(20)]
    await publish_all(nodes[0], bodies)
    await until(lambda: total(nodes, lambda n: n.metrics.flow.labels("sum", "collected")._value.get()) == 30)
    for node in nodes:
        await node.engine.flow.flusher.start()
    await until(lambda: len(got("s")) == 20 and len(got("g")) == 1, timeout=20)
    await until(lambda: total(nodes, lambda n: n.metrics.in_flight._value.get()) == 0)

    received = [total([n], lambda n: n.metrics.events_received.labels("event")._value.get()) for n in nodes]
    assert sum(received) == 110 and all(count > 0 for count in received), received

    assert len(got("d")) == 10
    assert total(nodes, lambda n: n.metrics.flow.labels("once", "skipped")._value.get()) == 20
    assert len(got("r")) == 5
    assert total(nodes, lambda n: n.metrics.flow.labels("capped", "dropped")._value.get()) == 25
    # One slot per 0.1s across the three nodes (burst 1): the i-th send can never go before
    # slot i. A send may start late on a loaded machine (and later ones catch up), so the
    # bound is on earliness, which is what throttling promises, not on the gaps between sends.
    sends = sorted(r.at for r in got("s"))
    assert all(sends[i] - began >= i * 0.1 - 0.02 for i in range(len(sends))), "never ahead of the rate"
    assert sends[-1] - began >= 1.8
    [digest] = got("g")
    assert digest.message.title == "30 events" and sorted(digest.event_ids) == sorted(f"g{i}" for i in range(30))


async def test_a_digest_open_when_the_router_restarts_is_delivered_once_after(cluster) -> None:
    rules = rules_yaml(
        "  g: {type: timed}", "  - {name: sum, on: g, template: many, channels: [g], digest: {window: 1500ms}}"
    )
    [before] = await cluster(rules)
    await before.engine.flow.flusher.close()  # however slow this machine, it restarts before flushing
    await publish_all(before, [("g", event("g", f"g{i}", n=i)) for i in range(3)])
    await until(lambda: before.metrics.flow.labels("sum", "collected")._value.get() == 3)
    await before.close()
    assert got("g") == []
    [after] = await cluster(rules)  # a new process: new connections, same queue and Redis
    await until(lambda: len(got("g")) == 1, timeout=10)
    assert sorted(got("g")[0].event_ids) == ["g0", "g1", "g2"]
    assert await after.engine.flow.flusher.flush_due() == 0
    await until(lambda: after.metrics.in_flight._value.get() == 0)
    assert len(got("g")) == 1


async def test_throttle_keeps_order_through_rabbitmq_delay_queues(cluster) -> None:
    rules = rules_yaml(
        "  s: {type: timed}",
        "  - {name: slow, on: s, template: one, channels: [s], throttle: {limit: 5, period: 1s, burst: 1, key: '{{ data.k }}'}}",
    )
    [node] = await cluster(rules)
    node.engine.flow.hold = 0.3  # most events wait as records in RabbitMQ's delay queues
    started = time.monotonic()
    for i in range(10):  # one at a time: the order they are published in is the order to keep
        await node.transport.publish_event(event("s", f"s{i}", k="same", n=i), routing_key="s")
    await until(lambda: len(got("s")) == 10, timeout=15)
    assert [r.message.body for r in got("s")] == [f"n={i}" for i in range(10)]
    # One slot per 0.2s: the i-th send never goes before slot i (a late send may be caught up
    # by the next, so gaps between sends are not the promise).
    sends = [r.at for r in got("s")]
    assert min(at - started - i * 0.2 for i, at in enumerate(sends)) >= -0.02
    assert sends[-1] - sends[0] >= 1.6
