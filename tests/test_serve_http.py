"""`router serve`'s HTTP endpoints, in process, against a real embedded queue.

POST /events answers 202 only once the events are in the queue (checked by consuming them),
400 with the reason and 413 above the limits; /readyz follows the transport; /metrics parses
with prometheus-client's own parser and carries every metric the operator is promised.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from router.app.server import ServeOptions, Server
from router.core.events import Event, decode
from router.ingest.http import MAX_BATCH, build_app
from router.support.metrics import Metrics
from router.transports.base import Incoming
from router.transports.embedded import EmbeddedTransport
from tests.builders import event_object
from tests.fakes.http_sink import HttpSink, Reply, free_port

MAX_EVENT = 2048  # bytes; small, so that the limits are cheap to cross


@pytest.fixture
async def queue(tmp_path: Path) -> AsyncIterator[EmbeddedTransport]:
    transport = EmbeddedTransport(tmp_path / "queue.db")
    await transport.connect()
    yield transport
    await transport.close()


@pytest.fixture
async def client(queue: EmbeddedTransport) -> AsyncIterator[TestClient[Any, Any]]:
    app = build_app(transport=queue, metrics=Metrics(), is_ready=lambda: True, max_event_bytes=MAX_EVENT)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def consume(queue: EmbeddedTransport, count: int, timeout: float = 10.0) -> list[Event]:
    """Take ``count`` events from the queue (acknowledging them), decoded as the engine does."""
    received: asyncio.Queue[Incoming] = asyncio.Queue()

    async def handler(message: Incoming) -> None:
        assert message.ack is not None
        await message.ack()
        await received.put(message)

    await queue.start(handler, prefetch=64)
    try:
        messages = [await asyncio.wait_for(received.get(), timeout) for _ in range(count)]
    finally:
        await queue.stop_consuming()
    return [decode(m.body, content_type=m.content_type, routing_key=m.routing_key) for m in messages]


async def post(client: TestClient[Any, Any], payload: Any, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    data = json.dumps(payload) if isinstance(payload, (dict, list)) else payload
    async with client.post("/events", data=data, **kwargs) as response:
        return response.status, await response.json()


async def test_one_event_is_enqueued_and_answered_with_its_id(
    client: TestClient[Any, Any], queue: EmbeddedTransport
) -> None:
    status, body = await post(client, {"type": "planet.completed", "id": "evt-1", "data": {"planet": {"id": 7}}})
    assert (status, body) == (202, {"ids": ["evt-1"]})
    [event] = await consume(queue, 1)
    assert (event.id, event.type, event.data) == ("evt-1", "planet.completed", {"planet": {"id": 7}})


async def test_an_array_is_enqueued_in_order(client: TestClient[Any, Any], queue: EmbeddedTransport) -> None:
    events = [{"type": f"user.step{n}", "id": f"evt-{n}", "data": {"n": n}} for n in range(5)]
    status, body = await post(client, events)
    assert (status, body) == (202, {"ids": [f"evt-{n}" for n in range(5)]})
    consumed = await consume(queue, 5)
    assert [(e.id, e.type, e.routing_key) for e in consumed] == [
        (f"evt-{n}", f"user.step{n}", f"user.step{n}") for n in range(5)
    ]


async def test_an_event_without_id_gets_a_fresh_id_each_time_it_is_posted(client: TestClient[Any, Any]) -> None:
    # Two genuine posts of the same content are two events (issue 15, item 14); a client that
    # wants its retries recognised sends its own id.
    event = {"type": "user.signed_up", "data": {"user": {"id": 1}}}
    first = await post(client, event)
    second = await post(client, event)
    assert first[0] == second[0] == 202
    assert first[1]["ids"] != second[1]["ids"]
    assert all(len(i) == 32 for i in first[1]["ids"] + second[1]["ids"])
    assert (await post(client, {"type": "user.signed_up", "id": "mine-1", "data": {}}))[1]["ids"] == ["mine-1"]


async def test_in_an_array_an_event_that_is_all_data_gets_a_fresh_id_even_with_an_id_member(
    client: TestClient[Any, Any],
) -> None:
    # Without a "data" member the whole object is the data: its "id" is data too, so each post
    # of it is a new event; with "data" (or CloudEvents' specversion) "id" is the event's id.
    all_data = {"type": "user.signed_up", "id": 7, "name": "ada"}
    first = await post(client, [all_data, all_data])
    second = await post(client, [all_data])
    ids = first[1]["ids"] + second[1]["ids"]
    assert len(set(ids)) == 3 and all(len(i) == 32 for i in ids)
    named = [
        {"type": "t", "id": "evt-a", "data": {}},
        {"specversion": "1.0", "type": "t", "id": "evt-b", "source": "/s"},
    ]
    assert (await post(client, named))[1]["ids"] == ["evt-a", "evt-b"]


async def test_cloudevents_binary_mode(client: TestClient[Any, Any], queue: EmbeddedTransport) -> None:
    headers = {
        "ce-specversion": "1.0",
        "ce-type": "space.completed",
        "ce-id": "ce-42",
        "ce-source": "/courses",
        "content-type": "application/json",
    }
    status, body = await post(client, {"space": {"id": 3}}, headers=headers)
    assert (status, body) == (202, {"ids": ["ce-42"]}), body
    [event] = await consume(queue, 1)
    assert (event.id, event.type, event.source, event.data) == (
        "ce-42",
        "space.completed",
        "/courses",
        {"space": {"id": 3}},
    )


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        pytest.param(b'{"type": "a.b", ', "body is not JSON", id="bad-json"),
        pytest.param(b'{"type": "a.\x80"}', "body is not UTF-8", id="not-utf8"),
        pytest.param(b'{"type": "a.b", "data": {"x": NaN}}', "body is not JSON: NaN is not a JSON value", id="nan"),
        pytest.param(b"42", "event: event is a number, not a JSON object", id="not-an-object"),
        pytest.param(b'"planet.completed"', "not a JSON object", id="a-string"),
        pytest.param(b'{"data": {"x": 1}}', "event: no event type", id="no-type"),
        pytest.param(b'{"type": "planet completed"}', "not a dotted name", id="bad-type"),
        pytest.param(b'{"type": "a.b", "data": [1]}', "'data' is an array", id="data-not-object"),
        pytest.param(b"[]", "empty array", id="empty-array"),
        pytest.param(b'[{"type": "a.b"}, {"type": "a.c"}, {"data": {}}]', "event [2]: no event type", id="bad-item"),
        pytest.param(b'[{"type": "a.b"}, 7]', "event [1]: event is a number", id="item-not-object"),
    ],
)
async def test_invalid_requests_get_400_with_the_reason_and_nothing_is_enqueued(
    client: TestClient[Any, Any], queue: EmbeddedTransport, payload: bytes, reason: str
) -> None:
    status, body = await post(client, payload, headers={"content-type": "application/json"})
    assert status == 400
    assert reason in body["error"]
    assert await queue.queue_depth() == 0, "a rejected request enqueues none of its events"


async def test_request_above_the_size_limit_gets_413(client: TestClient[Any, Any], queue: EmbeddedTransport) -> None:
    huge = json.dumps(event_object("a.b", None, {"blob": "x" * (MAX_EVENT * 8)}))
    status, body = await post(client, huge)
    assert status == 413 and "limit" in body["error"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit holds while reading
        for _ in range(16):
            yield b" " * MAX_EVENT

    status, body = await post(client, chunks())
    assert status == 413
    assert await queue.queue_depth() == 0


async def test_event_above_the_event_limit_gets_413_naming_it(client: TestClient[Any, Any]) -> None:
    small = {"type": "a.b", "data": {}}
    large = {"type": "a.b", "data": {"blob": "x" * MAX_EVENT}}
    status, body = await post(client, large)
    assert status == 413 and f"above the limit of {MAX_EVENT}" in body["error"]
    status, body = await post(client, [small, large])
    assert status == 413 and body["error"].startswith("event [1] ")


async def test_too_many_events_in_one_request_get_413(queue: EmbeddedTransport) -> None:
    # Events small enough that the count, not the size, is over the limit.
    app = build_app(transport=queue, metrics=Metrics(), is_ready=lambda: True, max_event_bytes=65536)
    async with TestClient(TestServer(app)) as test_client:
        status, body = await post(test_client, [{"type": "a.b"}] * (MAX_BATCH + 1))
        assert status == 413
        assert f"at most {MAX_BATCH} events" in body["error"]
        status, body = await post(test_client, [{"type": "a.b", "id": f"e{n}"} for n in range(MAX_BATCH)])
        assert status == 202 and len(body["ids"]) == MAX_BATCH
    assert await queue.queue_depth() == MAX_BATCH


async def test_healthz_and_readyz_follow_the_transport(client: TestClient[Any, Any], queue: EmbeddedTransport) -> None:
    async with client.get("/healthz") as response:
        assert response.status == 200
    async with client.get("/readyz") as response:
        assert (response.status, await response.json()) == (200, {"ready": True})
    await queue.close()
    async with client.get("/readyz") as response:
        assert (response.status, await response.json()) == (503, {"ready": False})
    async with client.get("/healthz") as response:
        assert response.status == 200, "alive even when not ready"
    status, body = await post(client, {"type": "a.b"})
    assert status == 503 and "closed" in body["error"], "no 202 without a durable enqueue"


async def test_readyz_is_false_while_stopping(queue: EmbeddedTransport) -> None:
    stopping = asyncio.Event()
    app = build_app(
        transport=queue, metrics=Metrics(), is_ready=lambda: not stopping.is_set(), max_event_bytes=MAX_EVENT
    )
    async with TestClient(TestServer(app)) as test_client:
        stopping.set()
        async with test_client.get("/readyz") as response:
            assert response.status == 503


async def test_metrics_endpoint_parses_as_prometheus_text(
    client: TestClient[Any, Any], queue: EmbeddedTransport
) -> None:
    await post(client, [{"type": "a.b"}, {"type": "a.c"}])
    async with client.get("/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = await response.text()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    [depth] = families["router_queue_depth"].samples
    assert depth.value == 2


# ------------------------------------------------------------------ a whole router, in process

ISSUE_METRICS = {
    # family (as the parser names it) -> what the issue calls it
    "router_events_received": "events received",
    "router_events_decoded": "events decoded",
    "router_events_failed": "events failed",
    "router_rules_matched": "rules matched",
    "router_deliveries": "deliveries by channel and outcome",
    "router_delivery_latency_seconds": "delivery latency histogram",
    "router_retries_scheduled": "retries scheduled",
    "router_dead_letters": "dead letters",
    "router_config_reloads": "config reloads, success and failure",
    "router_config_last_reload_successful": "whether the last reload succeeded",
    "router_queue_depth": "queue depth",
}


def rules_yaml(root: Path, ok: str, flaky: str, broken: str) -> str:
    return f"""
version: 1
broker: {{embedded_path: "{root / "queue.db"}"}}
state: {{url: "sqlite:///{root / "state.db"}"}}
defaults: {{retry: {{attempts: 3, backoff: 100ms, jitter: 0}}}}
channels:
  ok: {{type: webhook, url: "{ok}"}}
  flaky: {{type: webhook, url: "{flaky}"}}
  broken: {{type: webhook, url: "{broken}"}}
rules:
  - {{name: celebrate, on: planet.completed, template: note, channels: [ok, flaky]}}
  - {{name: audit, on: "user.*", template: note, channels: [broken]}}
"""


async def scrape(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(f"{url}/metrics") as response:
        return {family.name: family for family in text_string_to_metric_families(await response.text())}


def value(families: dict[str, Any], name: str, **labels: str) -> float:
    family = families[name]
    return sum(
        s.value
        for s in family.samples
        if s.name in (name, f"{name}_total") and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def poll(check: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if await check():
                return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_every_metric_the_issue_lists_is_exported_after_traffic(tmp_path: Path) -> None:
    async with HttpSink() as ok, HttpSink() as flaky, HttpSink(default=Reply(400)) as broken:
        flaky.reply(Reply(503))
        (tmp_path / "templates").mkdir()
        (tmp_path / "templates" / "note.j2").write_text("{{ event.type }} v1")
        config = tmp_path / "rules.yaml"
        config.write_text(rules_yaml(tmp_path, ok.url, flaky.url, broken.url))
        port = free_port()
        server = Server(ServeOptions(config_path=config, http=f"127.0.0.1:{port}", watch=False))
        running = asyncio.create_task(server.run())
        url = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as session:

                async def ready() -> bool:
                    if running.done():
                        running.result()
                    try:
                        async with session.get(f"{url}/readyz") as response:
                            return response.status == 200
                    except aiohttp.ClientConnectionError:
                        return False

                await poll(ready)
                events = [
                    {"type": "planet.completed", "id": "evt-planet", "data": {}},
                    {"type": "user.signed_up", "id": "evt-user", "data": {}},
                ]
                async with session.post(f"{url}/events", json=events) as response:
                    assert response.status == 202
                # A poison message, as another writer of the queue file could leave one.
                other = EmbeddedTransport(tmp_path / "queue.db")
                await other.connect()
                await other.publish_event(b"\xffnot json", routing_key="planet.completed")
                await other.close()

                (tmp_path / "templates" / "note.j2").write_text("{{ event.type }} v2")
                assert await server.reload("test")
                config.write_text(config.read_text() + "unknown_key: 1\n")
                assert not await server.reload("test")

                async def settled() -> bool:
                    families = await scrape(session, url)
                    return (
                        value(families, "router_deliveries", channel="flaky", outcome="sent") == 1
                        and value(families, "router_dead_letters", reason="poison") == 1
                    )

                await poll(settled)
                families = await scrape(session, url)
        finally:
            server.stop()
            await running

    missing = {what for name, what in ISSUE_METRICS.items() if name not in families}
    assert not missing, f"not exported: {missing}"
    assert value(families, "router_events_received", kind="event") == 3
    assert value(families, "router_events_received", kind="retry") == 1
    assert value(families, "router_events_decoded") == 2
    assert value(families, "router_events_failed", reason="poison") == 1
    assert value(families, "router_rules_matched", rule="celebrate") == 1
    assert value(families, "router_rules_matched", rule="audit") == 1
    assert value(families, "router_deliveries", channel="ok", outcome="sent") == 1
    assert value(families, "router_deliveries", channel="flaky", outcome="retry") == 1
    assert value(families, "router_deliveries", channel="broken", outcome="failed") == 1
    assert value(families, "router_retries_scheduled", channel="flaky") == 1
    assert value(families, "router_dead_letters", reason="permanent") == 1
    assert value(families, "router_config_reloads", result="success") == 1
    assert value(families, "router_config_reloads", result="failure") == 1
    assert value(families, "router_config_last_reload_successful") == 0
    assert value(families, "router_queue_depth") == 0
    latency = families["router_delivery_latency_seconds"]
    assert latency.type == "histogram"
    assert {s.labels.get("le") for s in latency.samples if s.name.endswith("_bucket")} >= {"0.1", "1.0", "+Inf"}
    assert [s.value for s in latency.samples if s.name.endswith("_count") and s.labels["channel"] == "ok"] == [1]
    # Bounded label cardinality: label values come from the configuration and fixed sets,
    # never from events (ids, raw types).
    labels = [(k, v) for family in families.values() for s in family.samples for k, v in s.labels.items()]
    assert not {v for _, v in labels} & {"evt-planet", "evt-user", "planet.completed", "user.signed_up"}
    assert {v for k, v in labels if k == "channel"} <= {"ok", "flaky", "broken"}
    assert {v for k, v in labels if k == "rule"} <= {"celebrate", "audit"}
