"""Three `router serve` processes on one RabbitMQ queue with Redis state behave as one router."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakes.http_sink import HttpSink
from tests.serve_support import RouterProcess, amqp_rules, delete_topology, publish_amqp, unique_names

pytestmark = pytest.mark.integration

TEMPLATE = "{% block title %}{{ data.user }}{% endblock %}{% block body %}{{ event.id }}{% endblock %}"


def handled_by(router: RouterProcess) -> int:
    return sum(r.get("msg") == "event handled" for r in router.log_records())


@pytest.fixture
async def names(rabbitmq_url: str) -> AsyncIterator[dict[str, str]]:
    names = unique_names()
    yield names
    await delete_topology(rabbitmq_url, names)


async def test_three_processes_deliver_each_event_once_and_share_dedupe(
    tmp_path: Path, rabbitmq_url: str, redis_url: str, names: dict[str, str]
) -> None:
    tag = uuid.uuid4().hex[:8]
    users = [f"{tag}-user{i}" for i in range(10)]
    total = 300
    async with HttpSink() as every, HttpSink() as once:
        channels = f"  every: {{type: webhook, url: '{every.url}'}}\n  once: {{type: webhook, url: '{once.url}'}}"
        rules = (
            "  - {name: every, on: '**', template: note, channels: [every]}\n"
            "  - {name: once, on: '**', template: note, channels: [once],"
            " dedupe: {key: '{{ data.user }}', window: 1h}}"
        )
        config = amqp_rules(rabbitmq_url, channels=channels, rules=rules, names=names)
        config = config.replace(
            'state: {url: "sqlite:///state.db"}', f'state: {{url: "{redis_url}", idempotency_window: 1h}}'
        )
        (tmp_path / "templates").mkdir()
        (tmp_path / "templates" / "note.j2").write_text(TEMPLATE)
        (tmp_path / "rules.yaml").write_text(config)

        routers = [RouterProcess(tmp_path) for _ in range(3)]
        try:
            await asyncio.gather(*(router.start() for router in routers))
            events = [
                (
                    "planet.completed",
                    json.dumps(
                        {"type": "planet.completed", "id": f"{tag}-{n}", "data": {"user": users[n % 10]}}
                    ).encode(),
                )
                for n in range(total)
            ]
            await publish_amqp(rabbitmq_url, names["exchange"], events)
            await every.wait_for(total, timeout=60)
            await once.wait_for(len(users), timeout=30)
            # Every event handled (acknowledged) somewhere before counting, so a late duplicate would show.
            deadline = asyncio.get_running_loop().time() + 30
            while sum(handled_by(router) for router in routers) < total:
                assert asyncio.get_running_loop().time() < deadline, "not every event was handled"
                await asyncio.sleep(0.1)
            delivered = Counter(r.json()["body"] for r in every.requests)
            assert set(delivered) == {f"{tag}-{n}" for n in range(total)}
            assert max(delivered.values()) == 1, "an event was delivered twice"
            assert sorted(r.json()["title"] for r in once.requests) == sorted(users), "dedupe held across processes"
            handled = [handled_by(router) for router in routers]
            assert sum(handled) == total
            assert all(count > 0 for count in handled), f"every process took part: {handled}"
        finally:
            await asyncio.gather(*(router.stop() for router in routers))
