"""`router.Publisher` against the real RabbitMQ: what an application relies on when it publishes.

Messages are read back from a temporary queue bound to a per-test exchange and decoded with
the router's own decoder. Outages are played by a TCP proxy between the publisher and the
broker (tests/fakes/tcp_proxy.py): the shared broker is never restarted.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from pydantic import BaseModel

import router
from router import Publisher, PublishError
from router.core.events import decode
from tests.engine_support import until
from tests.fakes.lost_confirm import LostConfirm
from tests.fakes.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration


class PlanetCompleted(BaseModel):
    planet_id: int
    name: str
    finished_at: datetime


class Bench:
    """A per-test exchange with a temporary queue bound to every key, read with a direct connection."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.exchange = f"test-pub-{uuid.uuid4().hex[:10]}"
        self.queue: AbstractQueue | None = None
        self.connection: aio_pika.abc.AbstractConnection | None = None

    async def open(self, binding: str = "#", arguments: dict[str, Any] | None = None) -> Bench:
        self.connection = await aio_pika.connect(self.url)
        channel = await self.connection.channel()
        exchange = await channel.declare_exchange(self.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        self.queue = await channel.declare_queue(exclusive=True, arguments=arguments)
        await self.queue.bind(exchange, routing_key=binding)
        return self

    async def take(self, count: int, timeout: float = 20.0) -> list[AbstractIncomingMessage]:
        assert self.queue is not None
        messages: list[AbstractIncomingMessage] = []
        deadline = time.monotonic() + timeout
        while len(messages) < count:
            message = await self.queue.get(no_ack=True, fail=False)
            if message is None:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{len(messages)} of {count} messages within {timeout}s")
                await asyncio.sleep(0.05)
                continue
            messages.append(message)
        return messages

    async def drain(self) -> list[AbstractIncomingMessage]:
        """Whatever else is in the queue now (for counting duplicates)."""
        assert self.queue is not None
        rest = []
        while (message := await self.queue.get(no_ack=True, fail=False)) is not None:
            rest.append(message)
        return rest

    async def close(self) -> None:
        if self.connection is not None:
            channel = await self.connection.channel()
            await channel.exchange_delete(self.exchange)
            await self.connection.close()


@pytest.fixture
async def bench(rabbitmq_url: str) -> AsyncIterator[Bench]:
    opened = await Bench(rabbitmq_url).open()
    yield opened
    await opened.close()


def decoded(message: AbstractIncomingMessage) -> Any:
    return decode(
        message.body, content_type=message.content_type, headers=message.headers, routing_key=message.routing_key
    )


async def test_a_dict_and_a_model_arrive_as_cloudevents_the_router_decodes(rabbitmq_url: str, bench: Bench) -> None:
    finished = datetime(2026, 11, 27, 12, 30, tzinfo=UTC)
    async with Publisher(rabbitmq_url, exchange=bench.exchange, source="planets-api") as pub:
        first = await pub.publish("planet.completed", {"planet": {"id": 7}}, subject="planet/7")
        second = await pub.publish("planet.completed", PlanetCompleted(planet_id=8, name="Mars", finished_at=finished))
    assert first != second
    one, two = await bench.take(2)
    for message, event_id in ((one, first), (two, second)):
        assert message.content_type == "application/cloudevents+json"
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert message.routing_key == "planet.completed"
        assert message.message_id == event_id, "the AMQP message id is the event id, for consumers that dedupe"
    event = decoded(one)
    assert (event.type, event.id, event.source, event.subject, event.data) == (
        "planet.completed",
        first,
        "planets-api",
        "planet/7",
        {"planet": {"id": 7}},
    )
    assert abs((datetime.now(UTC) - event.time).total_seconds()) < 300
    event = decoded(two)
    assert (event.type, event.id, event.source) == ("planet.completed", second, "planets-api")
    assert event.data == {"planet_id": 8, "name": "Mars", "finished_at": "2026-11-27T12:30:00Z"}


async def test_an_explicit_id_is_kept_for_idempotent_republishing(rabbitmq_url: str, bench: Bench) -> None:
    async with Publisher(rabbitmq_url, exchange=bench.exchange) as pub:
        ids = [await pub.publish("user.signed_up", {"user": 1}, id="signup-1", source="accounts") for _ in range(2)]
    assert ids == ["signup-1", "signup-1"]
    messages = await bench.take(2)
    assert [(decoded(m).id, decoded(m).source) for m in messages] == [("signup-1", "accounts")] * 2


async def test_invalid_input_is_refused_before_anything_is_sent(rabbitmq_url: str, bench: Bench) -> None:
    async with Publisher(rabbitmq_url, exchange=bench.exchange) as pub:
        with pytest.raises(ValueError, match="invalid event type"):
            await pub.publish("planet completed", {})
        with pytest.raises(ValueError, match="cannot be encoded as JSON"):
            await pub.publish("planet.completed", {"x": float("nan")})
        with pytest.raises(TypeError, match="pydantic model or a mapping"):
            await pub.publish("planet.completed", [1, 2])  # type: ignore[arg-type]
        await pub.publish("planet.completed", {"ok": True})
    [message] = await bench.take(1)
    assert decoded(message).data == {"ok": True}
    assert await bench.drain() == []


async def test_unroutable_raises_with_mandatory_and_is_dropped_without(rabbitmq_url: str) -> None:
    bench = await Bench(rabbitmq_url).open(binding="planet.*")
    try:
        async with Publisher(rabbitmq_url, exchange=bench.exchange, mandatory=True) as pub:
            with pytest.raises(PublishError, match=r"returned unroutable.*'user\.signed_up'"):
                await pub.publish("user.signed_up", {})
            await pub.publish("planet.completed", {})  # the channel is still usable
        async with Publisher(rabbitmq_url, exchange=bench.exchange) as pub:
            await pub.publish("user.signed_up", {})  # a topic exchange drops what nobody is bound for
        [message] = await bench.take(1)
        assert message.routing_key == "planet.completed"
    finally:
        await bench.close()


async def test_a_publish_the_broker_refuses_raises(rabbitmq_url: str) -> None:
    # A full queue that rejects publishes makes RabbitMQ nack: not confirmed, so not returned as published.
    bench = await Bench(rabbitmq_url).open(arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    try:
        async with Publisher(rabbitmq_url, exchange=bench.exchange) as pub:
            await pub.publish("planet.completed", {"n": 1})
            with pytest.raises(PublishError, match="RabbitMQ refused event"):
                await pub.publish("planet.completed", {"n": 2})
    finally:
        await bench.close()


async def test_connection_failures_are_clear_and_carry_no_password() -> None:
    with pytest.raises(PublishError) as caught:
        async with Publisher("amqp://guest:s3cret-pass@127.0.0.1:1/", connect_timeout=2):
            pass
    assert "cannot connect to RabbitMQ at amqp://127.0.0.1:1" in str(caught.value)
    assert "s3cret-pass" not in str(caught.value) and "s3cret-pass" not in repr(Publisher("amqp://u:s3cret-pass@h/"))
    closed = Publisher("amqp://guest:guest@127.0.0.1:1/")
    await closed.close()
    with pytest.raises(PublishError, match="closed"):
        await closed.publish("a.b", {})


async def test_a_publish_during_an_outage_completes_once_the_broker_is_back(rabbitmq_url: str, bench: Bench) -> None:
    async with TcpProxy("127.0.0.1", 5672) as proxy:
        url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
        async with Publisher(url, exchange=bench.exchange, reconnect_interval=0.2, publish_timeout=60) as pub:
            await pub.publish("planet.completed", {"n": 1}, id="before")
            proxy.cut()
            await until(lambda: not pub.connected, timeout=20)
            during = asyncio.create_task(pub.publish("planet.completed", {"n": 2}, id="during"))
            # The publisher keeps trying to reconnect and is refused: the publish must wait, not fail.
            await until(lambda: proxy.refused >= 3, timeout=20)
            assert not during.done(), "a publish during the outage waits for the broker"
            proxy.restore()
            async with asyncio.timeout(30):
                assert await during == "during"
            await pub.publish("planet.completed", {"n": 3}, id="after")
        messages = await bench.take(3)
        messages += await bench.drain()
    ids = [decoded(m).id for m in messages]
    # At-least-once: the publish was never confirmed before the cut, so it was sent once, after
    # the restore; a duplicate could only come from a confirm lost in flight (consumers dedupe by id).
    assert ids == ["before", "during", "after"], ids


async def test_an_outage_longer_than_the_timeout_raises_then_the_publisher_recovers(
    rabbitmq_url: str, bench: Bench
) -> None:
    async with TcpProxy("127.0.0.1", 5672) as proxy:
        url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
        async with Publisher(url, exchange=bench.exchange, reconnect_interval=0.2, publish_timeout=1.5) as pub:
            proxy.cut()
            await until(lambda: not pub.connected, timeout=20)
            started = time.monotonic()
            with pytest.raises(PublishError, match=r"event lost-1 \(planet.completed\) was not confirmed .* 1.5s"):
                await pub.publish("planet.completed", {}, id="lost-1")
            assert time.monotonic() - started < 10, "the timeout bounds the wait"
            proxy.restore()
            await until(lambda: pub.connected, timeout=30)
            await pub.publish("planet.completed", {}, id="after")
        [message] = await bench.take(1)
        assert decoded(message).id == "after"
        assert await bench.drain() == [], "the failed publish was not sent behind the caller's back"


async def test_a_publish_whose_confirm_never_comes_is_sent_again_after_the_confirm_timeout(
    rabbitmq_url: str, bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A publish caught by a reconnect may wait on a channel that never confirms: the attempt
    gives up after ``confirm_timeout`` and the event goes out again, well within ``publish_timeout``."""
    async with Publisher(rabbitmq_url, exchange=bench.exchange, publish_timeout=30, confirm_timeout=0.3) as pub:
        lost = LostConfirm.install(monkeypatch)
        started = time.monotonic()
        assert await pub.publish("planet.completed", {"n": 1}, id="stuck-once") == "stuck-once"
        assert time.monotonic() - started < 10, "waited out more than one attempt's confirm timeout"
    assert lost.calls == 2
    [message] = await bench.take(1)
    assert decoded(message).id == "stuck-once"


def test_import_router_does_not_import_aio_pika() -> None:
    import subprocess
    import sys

    code = "import sys, router; assert router.Publisher; print('aio_pika' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    assert router.Publisher is Publisher


def test_router_publish_uses_the_publisher_and_refuses_what_no_queue_gets(rabbitmq_url: str, tmp_path: Any) -> None:
    from click.testing import CliRunner

    from router.cli import cli
    from tests.serve_support import delete_topology, unique_names

    names = unique_names()
    config = tmp_path / "rules.yaml"
    config.write_text(
        f'version: 1\nbroker: {{url: "{rabbitmq_url}", exchange: {names["exchange"]}, queue: {names["queue"]}}}\n'
    )
    args = ["publish", "planet.completed", "--data", '{"planet": {"id": 7}}', "-c", str(config)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert "returned unroutable" in result.output and "start `router serve` once" in result.output
    assert "guest:guest" not in result.output

    async def declare_and_read(event_id: str | None) -> Any:
        from router.transports.amqp import AmqpTransport

        transport = AmqpTransport(rabbitmq_url, exchange=names["exchange"], queue=names["queue"])
        await transport.connect()  # what `router serve` declares
        await transport.close()
        if event_id is None:
            return None
        connection = await aio_pika.connect(rabbitmq_url)
        try:
            queue = await (await connection.channel()).declare_queue(names["queue"], passive=True)
            message = await queue.get(no_ack=True, timeout=10)
            assert message is not None
            return decoded(message)
        finally:
            await connection.close()

    try:
        asyncio.run(declare_and_read(None))
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        event_id = result.output.strip()
        event = asyncio.run(declare_and_read(event_id))
        assert (event.id, event.type, event.source, event.data) == (
            event_id,
            "planet.completed",
            "router-cli",
            {"planet": {"id": 7}},
        )
    finally:
        asyncio.run(delete_topology(rabbitmq_url, names))
