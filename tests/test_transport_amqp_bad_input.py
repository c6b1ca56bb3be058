"""Hostile messages on RabbitMQ: each is dead-lettered once, with its reason, and nothing else is disturbed.

A plain aio-pika publisher plays a misbehaving application against a real `router serve`. Every
bad message must end in the dead-letter queue (seen through `router dlq list --json`) with a
reason that says what is wrong; the router stays up, nothing loops through requeues, and a good
event published after them all is delivered.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from tests.engine_support import until
from tests.fakes.http_sink import HttpSink
from tests.serve_support import ROUTER, RouterProcess, amqp_rules, delete_topology, scrape_metrics, unique_names

pytestmark = pytest.mark.integration

MAX_BODY = 1_048_576  # broker.max_body_bytes (the default)


@dataclass(frozen=True)
class Bad:
    """One hostile message and what its dead letter must say."""

    body: bytes
    error: str  # a part of the dead letter's error
    reason: str = "poison"
    routing_key: str = "bad.input"
    content_type: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)


CE = "application/cloudevents+json"
CASES: dict[str, Bad] = {
    "not-json": Bad(b"hello, world", "body is not JSON"),
    "invalid-utf8": Bad(b'{"type": "a.b", "x": "\xff\xfe"}', "not UTF-8 (invalid byte at offset 22)"),
    "oversize": Bad(
        b'{"type": "a.b", "pad": "' + b"x" * (20 * 1024 * 1024) + b'"}', f"exceeds {MAX_BODY}", reason="oversize"
    ),
    "deeply-nested": Bad(b"[" * 100_000, "nested too deeply"),
    "deeply-nested-data": Bad(b'{"type": "a.b", "data": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_001, "too deeply"),
    # The routing key names the type of a plain JSON event; an empty one leaves no type at all.
    "no-type": Bad(b'{"user": "ada"}', "no event type", routing_key=""),
    "no-type-cloudevent": Bad(b'{"specversion": "1.0", "id": "1", "source": "s"}', "no event type", routing_key=""),
    "type-not-a-string": Bad(b'{"type": 5, "data": {}}', "'type' must be a string"),
    "type-not-dotted": Bad(b'{"type": "a..b", "data": {}}', "is not a dotted name"),
    "specversion-structured": Bad(
        b'{"specversion": "0.3", "type": "a.b", "id": "1", "source": "s"}', "specversion '0.3'", content_type=CE
    ),
    "specversion-in-body": Bad(b'{"specversion": 1.0, "type": "a.b", "id": "1", "source": "s"}', "specversion 1.0"),
    "specversion-binary": Bad(
        b'{"x": 1}',
        "specversion '0.3' in headers",
        headers={"cloudEvents_specversion": "0.3", "cloudEvents_type": "a.b", "cloudEvents_id": "1"},
    ),
    "binary-body-array": Bad(
        b"[1, 2]", "'body' is an array", headers={"cloudEvents_specversion": "1.0", "cloudEvents_type": "a.b"}
    ),
    "array": Bad(b'[{"type": "a.b"}]', "body is an array, not a JSON object"),
    "data-not-object": Bad(b'{"type": "a.b", "data": "text"}', "'data' is a string, not a JSON object"),
    "data-array": Bad(
        b'{"specversion": "1.0", "type": "a.b", "id": "1", "source": "s", "data": [1]}', "'data' is an array"
    ),
    "huge-integer": Bad(b'{"type": "a.b", "n": 1' + b"0" * 5000 + b"}", "integer too large"),
    "infinite-number": Bad(b'{"type": "a.b", "n": 1e999}', "number out of range"),
    "nan-literal": Bad(b'{"type": "a.b", "n": NaN}', "NaN is not a JSON value"),
    "duplicate-type": Bad(b'{"type": "a.b", "type": "c.d"}', "duplicate key 'type'"),
    "lone-surrogate": Bad(b'{"type": "a.b", "name": "\\ud800"}', "lone UTF-16 surrogate"),
    "time-out-of-range": Bad(b'{"type": "a.b", "time": "9999-12-31T23:59:59-05:00", "data": {}}', "out of range"),
    "batch-mode": Bad(b'[{"type": "a.b"}]', "batch mode is not supported", content_type=CE[:-5] + "-batch+json"),
    "empty": Bad(b"", "body is empty"),
}
GOOD = b'{"type": "order.created", "id": "good-1", "data": {"user": "ada"}}'


@pytest.fixture
async def names(rabbitmq_url: str) -> AsyncIterator[dict[str, str]]:
    names = unique_names()
    yield names
    await delete_topology(rabbitmq_url, names)


async def publish(url: str, exchange: str, messages: list[tuple[str, Bad]]) -> None:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        for case, bad in messages:
            message = aio_pika.Message(
                body=bad.body,
                content_type=bad.content_type,
                headers={**bad.headers, "test-case": case},
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            await target.publish(message, routing_key=bad.routing_key)
    finally:
        await connection.close()


async def test_each_bad_message_is_dead_lettered_with_its_reason_and_good_ones_flow(
    tmp_path: Path, rabbitmq_url: str, names: dict[str, str]
) -> None:
    async with HttpSink() as hook:
        (tmp_path / "templates").mkdir()
        (tmp_path / "templates" / "note.j2").write_text("{% block title %}{{ data.user }}{% endblock %}")
        channels = f"  hook: {{type: webhook, url: '{hook.url}'}}"
        rules = "  - {name: note, on: '**', template: note, channels: [hook]}"
        (tmp_path / "rules.yaml").write_text(amqp_rules(rabbitmq_url, channels=channels, rules=rules, names=names))
        router = await RouterProcess(tmp_path).start()
        try:
            await publish(rabbitmq_url, names["exchange"], list(CASES.items()))
            await publish(rabbitmq_url, names["exchange"], [("good", Bad(GOOD, "", routing_key="order.created"))])
            [delivered] = await hook.wait_for(1, timeout=60)
            assert delivered.json()["meta"]["event_id"] == "good-1"

            # Messages are handled concurrently (prefetch): wait for all, then make sure none is
            # dead-lettered twice (a requeue loop would show as repeats).
            await until(lambda: len(dead_lettered(router)) >= len(CASES), timeout=60, interval=0.2)
            dead = dead_lettered(router)
            assert len(dead) == len(CASES), [r.get("error") for r in dead]
            assert router.proc is not None and router.proc.poll() is None, "the router is still running"

            listed = subprocess.run(
                [ROUTER, "dlq", "list", "--json"], cwd=tmp_path, capture_output=True, timeout=120, check=True
            )
            letters = {letter["headers"]["test-case"]: letter for letter in json.loads(listed.stdout)}
            assert sorted(letters) == sorted(CASES)
            for case, bad in CASES.items():
                letter = letters[case]
                assert letter["reason"] == bad.reason, (case, letter["reason"])
                assert bad.error in letter["error"], (case, letter["error"])
                assert letter["size"] == len(bad.body), "the dead letter keeps the message as it was sent"
                assert letter["headers"]["x-router-routing-key"] == bad.routing_key
                for name, value in bad.headers.items():  # binary-mode attributes are kept for a replay
                    assert letter["headers"][name] == value
            assert letters["not-json"]["body"] == "hello, world"

            samples = await scrape_metrics(router)
            failed = {
                dict(labels)["reason"]: value
                for (name, labels), value in samples.items()
                if name == "router_events_failed_total"
            }
            assert failed == {"poison": len(CASES) - 1, "oversize": 1}
            requeued = sum(value for (name, _), value in samples.items() if name == "router_events_requeued_total")
            assert requeued == 0, "no bad message went back to the queue"
            # Nothing is left in flight or requeued: the queue is drained.
            assert await queue_depth(rabbitmq_url, names["queue"]) == 0
        finally:
            await router.stop()


def dead_lettered(router: RouterProcess) -> list[dict[str, Any]]:
    return [r for r in router.log_records() if r.get("msg") == "message dead-lettered"]


async def queue_depth(url: str, queue: str) -> int:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)
    finally:
        await connection.close()
