"""Event ids against a real `router serve` (issue 15, item 14).

Idempotency is keyed by (source, id), as CloudEvents defines uniqueness: a client posting
another source's id does not make that source's genuine event be skipped as already sent. An
event posted over HTTP without an id gets a fresh id (returned in the 202): two identical
posts are two events. A RabbitMQ message without an id keeps an id derived from its content:
published again, it is recognised and not delivered twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.builders import event_bytes
from tests.fakes.http_sink import HttpSink
from tests.serve_support import RouterProcess, amqp_rules, delete_topology, publish_amqp, unique_names

TEMPLATE = "{% block title %}{{ event.type }}{% endblock %}{% block body %}{{ event.source }}{% endblock %}"


def project(root: Path, rules_yaml: str) -> None:
    (root / "templates").mkdir(exist_ok=True)
    (root / "templates" / "note.j2").write_text(TEMPLATE)
    (root / "rules.yaml").write_text(rules_yaml)


def embedded_rules(sink_url: str) -> str:
    return (
        "version: 1\n"
        "channels:\n"
        f"  hook: {{type: webhook, url: '{sink_url}/hook'}}\n"
        "rules:\n"
        "  - {name: note, on: '**', template: note, channels: [hook]}\n"
    )


async def post(router: RouterProcess, event: dict[str, Any]) -> list[str]:
    async with aiohttp.ClientSession() as session, session.post(f"{router.url}/events", json=event) as response:
        assert response.status == 202, await response.text()
        ids: list[str] = (await response.json())["ids"]
        return ids


async def handled(router: RouterProcess, count: int, timeout: float = 15.0) -> None:
    """Wait until the router logged ``count`` events handled."""
    deadline = time.monotonic() + timeout
    while sum(1 for r in router.log_records() if r.get("msg") == "event handled") < count:
        assert time.monotonic() < deadline, f"fewer than {count} events handled:\n{router.logs()}"
        await asyncio.sleep(0.05)


@pytest.fixture
async def routers() -> AsyncIterator[list[RouterProcess]]:
    started: list[RouterProcess] = []
    yield started
    for router in started:
        await router.stop()


async def test_another_sources_id_does_not_suppress_the_genuine_event(
    tmp_path: Path, routers: list[RouterProcess]
) -> None:
    async with HttpSink() as sink:
        project(tmp_path, embedded_rules(sink.url))
        router = await RouterProcess(tmp_path, args=("--no-watch",)).start()
        routers.append(router)
        # A client claims the id first, with no source (or any other source).
        assert await post(router, {"type": "signup.created", "id": "signup-42", "data": {"user": "mallory"}}) == [
            "signup-42"
        ]
        await sink.wait_for(1)
        genuine = {
            "specversion": "1.0",
            "type": "signup.created",
            "id": "signup-42",
            "source": "/app/signup",
            "data": {"user": "ada"},
        }
        await post(router, genuine)
        await sink.wait_for(2)
        # The genuine event, posted again, is recognised: same source and id.
        await post(router, genuine)
        await handled(router, 3)
        assert len(sink.requests) == 2
        assert sorted(r.json()["body"] for r in sink.requests) == ["/app/signup", "unknown"]


async def test_an_event_posted_without_id_twice_is_two_events(tmp_path: Path, routers: list[RouterProcess]) -> None:
    async with HttpSink() as sink:
        project(tmp_path, embedded_rules(sink.url))
        router = await RouterProcess(tmp_path, args=("--no-watch",)).start()
        routers.append(router)
        event = {"type": "user.signed_up", "data": {"user": {"name": "Ada"}}}  # the README's curl
        [first] = await post(router, event)
        [second] = await post(router, event)
        assert first != second
        requests = await sink.wait_for(2)
        assert sorted(r.json()["meta"]["event_id"] for r in requests) == sorted([first, second])


@pytest.mark.integration
async def test_an_amqp_message_without_id_keeps_a_derived_id_and_is_recognised(
    tmp_path: Path, rabbitmq_url: str, routers: list[RouterProcess]
) -> None:
    names = unique_names()
    try:
        async with HttpSink() as sink:
            channels = f"  hook: {{type: webhook, url: '{sink.url}/hook'}}"
            rules = "  - {name: note, on: '**', template: note, channels: [hook]}"
            project(tmp_path, amqp_rules(rabbitmq_url, channels=channels, rules=rules, names=names))
            router = await RouterProcess(tmp_path, args=("--no-watch",)).start()
            routers.append(router)
            body = event_bytes("order.paid", None, {"order": 7})
            # The same message twice (as a redelivery or a publisher's retry would bring it).
            await publish_amqp(rabbitmq_url, names["exchange"], [("order.paid", body)])
            await sink.wait_for(1)
            await publish_amqp(rabbitmq_url, names["exchange"], [("order.paid", body)])
            await handled(router, 2)
            assert len(sink.requests) == 1
            event_id = sink.requests[0].json()["meta"]["event_id"]
            assert len(event_id) == 32
    finally:
        await delete_topology(rabbitmq_url, names)
