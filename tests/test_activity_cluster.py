"""Three `router serve` processes on RabbitMQ, Redis state and one PostgreSQL activity history:
the API of any one of them shows the events of all three (docs/activity.md, "Storage")."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.builders import event_bytes
from tests.fakes.http_sink import HttpSink
from tests.pg_schema import private_schema
from tests.serve_support import RouterProcess, amqp_rules, delete_topology, publish_amqp, unique_names

pytestmark = pytest.mark.integration


@pytest.fixture
async def names(rabbitmq_url: str) -> AsyncIterator[dict[str, str]]:
    names = unique_names()
    yield names
    await delete_topology(rabbitmq_url, names)


@pytest.fixture
def activity_url(postgres_dsn: str) -> Iterator[str]:
    with private_schema(postgres_dsn, "activity_cluster") as url:
        yield url


async def get(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def test_one_api_shows_the_events_of_three_routers(
    tmp_path: Path, rabbitmq_url: str, redis_url: str, names: dict[str, str], activity_url: str
) -> None:
    tag = uuid.uuid4().hex[:8]
    total = 300  # prefetch 64 each: enough that every process takes some
    async with HttpSink() as hook:
        config = amqp_rules(
            rabbitmq_url,
            channels=f"  hook: {{type: webhook, url: '{hook.url}'}}",
            rules="  - {name: every, on: '**', template: note, channels: [hook]}",
            names=names,
            extra=f'activity: {{url: "{activity_url}"}}',
        ).replace('state: {url: "sqlite:///state.db"}', f'state: {{url: "{redis_url}", idempotency_window: 1h}}')
        (tmp_path / "templates").mkdir()
        (tmp_path / "templates" / "note.j2").write_text(
            "{% block title %}t{% endblock %}{% block body %}b{% endblock %}"
        )
        (tmp_path / "rules.yaml").write_text(config)
        routers = [RouterProcess(tmp_path) for _ in range(3)]
        try:
            await asyncio.gather(*(router.start() for router in routers))
            events = [("order.paid", event_bytes("order.paid", f"{tag}-{n}")) for n in range(total)]
            await publish_amqp(rabbitmq_url, names["exchange"], events)
            await hook.wait_for(total, timeout=90)
            async with aiohttp.ClientSession() as session:
                deadline = time.monotonic() + 60
                while True:
                    listed = await get(session, f"{routers[0].url}/api/activity?since=1h&limit=500")
                    sent = [e for e in listed["events"] if e["outcome"] == "sent"]
                    if len(sent) == total or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.2)
                assert {e["event_id"] for e in sent} == {f"{tag}-{n}" for n in range(total)}
                assert listed["counts"]["sent"] == total
                processes = set()
                for event in listed["events"]:
                    story = await get(session, f"{routers[0].url}/api/events/{event['event_id']}")
                    processes.add(story["process"])
                assert len(processes) == 3, f"every process recorded some events: {processes}"
        finally:
            for router in routers:
                await router.stop()
