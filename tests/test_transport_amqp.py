"""What only the RabbitMQ transport does: topology, bindings, quorum queues, the retry ladder,
riding out a dropped connection, and keeping the password out of errors."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Callable

import aio_pika
import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiormq.exceptions import ChannelPreconditionFailed
from yarl import URL

from router.ingest.http import build_app
from router.support.metrics import Metrics
from router.transports import retry_ladder
from router.transports.amqp import AmqpTransport, redact_url
from router.transports.amqp import transport as transport_module
from router.transports.base import H_ATTEMPTS, H_DEAD_AT, H_REASON, Incoming, TransportError
from tests.fakes.lost_confirm import LostConfirm

WAIT = 10.0

# ---------------------------------------------------------------------------- the ladder (no broker)


def test_ladder_never_rounds_a_delay_down() -> None:
    for delay in (0.0, 0.05, 0.1, 0.3, 1.0, 2.0, 7.5, 60.0, 599.9, 3600.0, 86_400.0):
        step = retry_ladder.step_for(delay)
        assert step is not None and step / 1000 >= delay


def test_ladder_steps_stay_within_the_ratio_and_are_bounded() -> None:
    ladder = retry_ladder.LADDER
    assert ladder[0] == retry_ladder.MIN_MS and ladder[-1] == retry_ladder.MAX_MS
    assert all(b / a <= retry_ladder.RATIO + 0.01 for a, b in itertools.pairwise(ladder))
    assert len(ladder) < 70
    assert retry_ladder.step_for(0.3) == 305
    assert retry_ladder.step_for(86_400.001) is None


def test_redacted_url_hides_the_password() -> None:
    assert redact_url("amqp://user:hunter2@broker:5672/vhost?heartbeat=30") == "amqp://user:***@broker:5672/vhost"


# ---------------------------------------------------------------------------- against RabbitMQ


@pytest.fixture
def names() -> tuple[str, str]:
    queue = f"test-amqp-{uuid.uuid4().hex[:12]}"
    return f"{queue}.events", queue


@pytest.fixture
async def make(rabbitmq_url: str, names: tuple[str, str]) -> AsyncIterator[Callable[..., AmqpTransport]]:
    exchange, queue = names
    created: list[AmqpTransport] = []

    def build(**options: object) -> AmqpTransport:
        options.setdefault("exchange", exchange)
        options.setdefault("queue", queue)
        url = str(options.pop("url", rabbitmq_url))
        transport = AmqpTransport(url, reconnect_interval=0.1, **options)  # type: ignore[arg-type]
        created.append(transport)
        return transport

    yield build

    for transport in created:
        await transport.close()
    # Connecting declares the queues: the cleaner must ask for the type they were made with.
    queue_type = created[0].queue_type if created else "classic"
    cleaner = AmqpTransport(rabbitmq_url, exchange=exchange, queue=queue, queue_type=queue_type)
    await cleaner.connect()
    await cleaner.delete_topology()
    await cleaner.close()


@pytest.fixture
async def raw(rabbitmq_url: str) -> AsyncIterator[aio_pika.abc.AbstractConnection]:
    """A plain connection, playing an application or an operator."""
    connection = await aio_pika.connect(rabbitmq_url)
    yield connection
    await connection.close()


class Inbox:
    def __init__(self) -> None:
        self.messages: asyncio.Queue[Incoming] = asyncio.Queue()

    async def __call__(self, message: Incoming) -> None:
        await self.messages.put(message)

    async def next(self) -> Incoming:
        message = await asyncio.wait_for(self.messages.get(), WAIT)
        assert message.ack is not None
        return message


@pytest.mark.integration
async def test_topology_is_durable_and_as_documented(
    make: Callable[..., AmqpTransport], raw: aio_pika.abc.AbstractConnection, names: tuple[str, str]
) -> None:
    exchange, queue = names
    transport = make()
    await transport.connect()
    await transport.schedule_retry(b"r", delay=0.3, headers={})

    # Redeclaring with the same settings succeeds only if they match what the transport made.
    channel = await raw.channel()
    await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    for name in (queue, f"{queue}.retry", f"{queue}.dead"):
        await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "classic"})
    delay_arguments = {
        "x-queue-type": "classic",
        "x-message-ttl": 305,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": f"{queue}.retry",
    }
    await channel.declare_queue(f"{queue}.retry.305", durable=True, arguments=delay_arguments)
    with pytest.raises(ChannelPreconditionFailed):
        await channel.declare_queue(
            f"{queue}.retry.305", durable=True, arguments={**delay_arguments, "x-message-ttl": 1}
        )


@pytest.mark.integration
async def test_applications_publishing_to_the_exchange_reach_the_router_through_its_bindings(
    make: Callable[..., AmqpTransport], raw: aio_pika.abc.AbstractConnection, names: tuple[str, str]
) -> None:
    exchange_name, _ = names
    transport = make(bindings=["planet.*"])
    await transport.connect()
    inbox = Inbox()
    await transport.start(inbox, prefetch=10)

    channel = await raw.channel()
    exchange = await channel.get_exchange(exchange_name)
    for key in ("user.signed_up", "planet.completed"):
        await exchange.publish(aio_pika.Message(key.encode(), content_type="application/json"), routing_key=key)
    first = await inbox.next()
    assert (first.body, first.routing_key, first.content_type) == (
        b"planet.completed",
        "planet.completed",
        "application/json",
    )

    await exchange.publish(aio_pika.Message(b"planet.marker"), routing_key="planet.marker")
    # The queue is FIFO: a routed "user.signed_up" would have come before this marker.
    assert (await inbox.next()).body == b"planet.marker"


@pytest.mark.integration
async def test_quorum_queues_carry_the_whole_cycle(
    make: Callable[..., AmqpTransport], raw: aio_pika.abc.AbstractConnection, names: tuple[str, str]
) -> None:
    _, queue = names
    transport = make(queue_type="quorum")
    await transport.connect()
    inbox = Inbox()
    await transport.start(inbox, prefetch=10)

    await transport.publish_event(b"event", routing_key="a.b", headers={"k": "v"})
    event = await inbox.next()
    assert (event.kind, event.body, event.headers) == ("event", b"event", {"k": "v"})
    await event.requeue()  # type: ignore[misc]
    again = await inbox.next()
    assert again.redelivered
    await again.ack()  # type: ignore[misc]

    await transport.schedule_retry(b"retry", delay=0.2, headers={H_ATTEMPTS: 2})
    retry = await inbox.next()
    assert (retry.kind, retry.body, retry.headers) == ("retry", b"retry", {H_ATTEMPTS: 2})
    await retry.ack()  # type: ignore[misc]

    await transport.dead_letter(b"dead", headers={H_REASON: "permanent"})
    [letter] = await transport.dlq_list()
    assert (letter.reason, letter.body) == ("permanent", b"dead")
    assert "x-delivery-count" not in letter.headers

    channel = await raw.channel()
    await channel.declare_queue(queue, durable=True, arguments={"x-queue-type": "quorum"})
    with pytest.raises(ChannelPreconditionFailed):
        await channel.declare_queue(queue, durable=True, arguments={"x-queue-type": "classic"})


@pytest.mark.integration
async def test_two_processes_listing_dead_letters_at_once_each_see_every_letter(
    make: Callable[..., AmqpTransport], raw: aio_pika.abc.AbstractConnection
) -> None:
    # Listing holds the letters it read unacked until it is done: two operators (or a console and
    # an operator) listing together must not each see the letters the other holds as missing.
    first, second = make(), make()
    await first.connect()
    await second.connect()
    for n in range(20):
        await first.dead_letter(f"dead-{n}".encode(), headers={H_REASON: "permanent"})
    for _ in range(5):
        listed = await asyncio.gather(first.dlq_list(), second.dlq_list(), first.dlq_list())
        assert [sorted(letter.body for letter in letters) for letters in listed] == [
            sorted(f"dead-{n}".encode() for n in range(20))
        ] * 3
    # The turn-taking queue goes once the browsing is over.
    channel = await raw.channel()
    with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
        await channel.declare_queue(first.browse_lock_queue, passive=True)


@pytest.mark.integration
async def test_a_browse_held_elsewhere_too_long_is_a_clear_error(
    make: Callable[..., AmqpTransport], raw: aio_pika.abc.AbstractConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport_module, "BROWSE_LOCK_WAIT", 0.5)
    transport = make()
    await transport.connect()
    await transport.dead_letter(b"dead", headers={H_REASON: "permanent"})
    holder = await raw.channel()
    await holder.declare_queue(transport.browse_lock_queue, exclusive=True, auto_delete=True)
    with pytest.raises(TransportError, match="another process has been browsing the dead letters"):
        await transport.dlq_list()
    await holder.queue_delete(transport.browse_lock_queue)
    [letter] = await transport.dlq_list()
    assert letter.body == b"dead"


@pytest.mark.integration
async def test_a_queue_of_another_type_is_a_clear_error(make: Callable[..., AmqpTransport]) -> None:
    await make(queue_type="classic").connect()
    with pytest.raises(TransportError, match="x-queue-type"):
        await make(queue_type="quorum").connect()


@pytest.mark.integration
async def test_retries_longer_than_the_ladder_are_chained_until_due(
    make: Callable[..., AmqpTransport], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retry_ladder, "LADDER", (100, 200))
    monkeypatch.setattr(retry_ladder, "MAX_MS", 200)
    transport = make()
    await transport.connect()
    inbox = Inbox()
    await transport.start(inbox, prefetch=10)

    started = time.monotonic()
    assert await transport.schedule_retry(b"long", delay=0.5, headers={H_ATTEMPTS: 4}) == 0.5
    message = await inbox.next()
    assert time.monotonic() - started >= 0.5
    assert (message.kind, message.body, message.headers) == ("retry", b"long", {H_ATTEMPTS: 4})


@pytest.mark.integration
async def test_a_delay_queue_deleted_by_hand_is_declared_again(
    make: Callable[..., AmqpTransport], raw: aio_pika.abc.AbstractConnection, names: tuple[str, str]
) -> None:
    _, queue = names
    transport = make()
    await transport.connect()
    inbox = Inbox()
    await transport.start(inbox, prefetch=10)
    await transport.schedule_retry(b"one", delay=0.1, headers={})
    await (await inbox.next()).ack()  # type: ignore[misc]

    channel = await raw.channel()
    await channel.queue_delete(f"{queue}.retry.100")
    await transport.schedule_retry(b"two", delay=0.1, headers={})
    assert (await inbox.next()).body == b"two"


@pytest.mark.integration
async def test_float_headers_keep_their_precision(make: Callable[..., AmqpTransport]) -> None:
    # The AMQP client would send a Python float as 32 bits: an epoch time off by a minute.
    transport = make()
    await transport.connect()
    await transport.dead_letter(b"x", headers={H_DEAD_AT: 1_700_000_000.125, "x-ratio": 0.1})
    [letter] = await transport.dlq_list()
    assert letter.dead_at == 1_700_000_000.125
    assert float(letter.headers["x-ratio"]) == 0.1


class DropProxy:
    """A TCP proxy to RabbitMQ whose connections a test can cut, like a network failure."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.accepted = 0

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._writers += [writer, up_writer]
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            sink.close()

    async def stop_accepting(self) -> None:
        """Refuse new connections (the broker is unreachable); the proxied ones stay until dropped."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def drop(self) -> None:
        """Abort every proxied connection, both ways."""
        writers, self._writers = self._writers, []
        for writer in writers:
            writer.transport.abort()

    async def close(self) -> None:
        self.drop()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@pytest.mark.integration
async def test_consumption_resumes_after_the_connection_drops_with_nothing_lost(
    make: Callable[..., AmqpTransport], rabbitmq_url: str
) -> None:
    broker = URL(rabbitmq_url)
    proxy = DropProxy(broker.host or "127.0.0.1", broker.port or 5672)
    port = await proxy.start()
    try:
        transport = make(url=str(broker.with_host("127.0.0.1").with_port(port)))
        await transport.connect()
        inbox = Inbox()
        await transport.start(inbox, prefetch=10)
        await transport.publish_event(b"before", routing_key="a")
        held = await inbox.next()

        proxy.drop()
        await held.ack()  # type: ignore[misc]  # the channel is gone: not an error, RabbitMQ redelivers
        # Published while the connection is down: waits for the reconnect, then is confirmed.
        await transport.publish_event(b"during", routing_key="a")

        received: dict[bytes, bool] = {}
        for _ in range(2):
            message = await inbox.next()
            received[message.body] = message.redelivered
            await message.ack()  # type: ignore[misc]
        assert received == {b"before": True, b"during": False}
        assert proxy.accepted >= 2
        assert transport.connected

        await transport.publish_event(b"after", routing_key="a")
        assert (await inbox.next()).body == b"after"
    finally:
        await proxy.close()


@pytest.mark.integration
async def test_a_batch_published_while_the_connection_is_down_is_confirmed_once_it_is_back(
    make: Callable[..., AmqpTransport], rabbitmq_url: str
) -> None:
    broker = URL(rabbitmq_url)
    proxy = DropProxy(broker.host or "127.0.0.1", broker.port or 5672)
    port = await proxy.start()
    try:
        transport = make(url=str(broker.with_host("127.0.0.1").with_port(port)))
        await transport.connect()
        inbox = Inbox()
        await transport.start(inbox, prefetch=10)
        proxy.drop()
        batch = [(f"during-{n}".encode(), "a") for n in range(20)]
        # Waits for the reconnect, publishes the batch again on the new channel, then every confirm.
        assert await transport.publish_events(batch) == [None] * 20
        received = []
        for _ in batch:
            message = await inbox.next()
            received.append(message.body)
            await message.ack()  # type: ignore[misc]
        assert sorted(received) == sorted(body for body, _ in batch)
        assert proxy.accepted >= 2
    finally:
        await proxy.close()


@pytest.mark.integration
async def test_a_batch_the_broker_never_confirms_fails_every_event_after_the_publish_timeout(
    make: Callable[..., AmqpTransport], rabbitmq_url: str
) -> None:
    broker = URL(rabbitmq_url)
    proxy = DropProxy(broker.host or "127.0.0.1", broker.port or 5672)
    port = await proxy.start()
    try:
        transport = make(url=str(broker.with_host("127.0.0.1").with_port(port)), publish_timeout=1.0)
        await transport.connect()
        await proxy.stop_accepting()
        proxy.drop()
        started = time.monotonic()
        results = await transport.publish_events([(f"lost-{n}".encode(), "a") for n in range(5)])
        assert time.monotonic() - started < 10
        assert all(isinstance(result, TransportError) for result in results), results
        assert "not confirmed by RabbitMQ within 1s" in str(results[0])
    finally:
        await proxy.close()


@pytest.mark.integration
async def test_a_publish_whose_confirm_never_comes_is_tried_again_after_the_confirm_timeout(
    make: Callable[..., AmqpTransport], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A publish caught by a reconnect can wait on a channel that will never confirm it (seen
    in the broker-restart fault test: a retry record waited out the whole publish_timeout, its
    event requeued). Each attempt waits ``confirm_timeout`` at most, then goes again."""
    transport = make(publish_timeout=30.0, confirm_timeout=0.3)
    await transport.connect()
    inbox = Inbox()
    await transport.start(inbox, prefetch=10)
    lost = LostConfirm.install(monkeypatch)
    started = time.monotonic()
    await transport.schedule_retry(b"retry", delay=0, headers={})
    assert time.monotonic() - started < 10, "waited for more than one attempt's confirm timeout"
    assert lost.calls == 2
    retry = await inbox.next()
    assert (retry.kind, retry.body) == ("retry", b"retry")
    await retry.ack()  # type: ignore[misc]


@pytest.mark.integration
async def test_post_events_answers_503_when_rabbitmq_does_not_confirm_the_batch(
    make: Callable[..., AmqpTransport], rabbitmq_url: str
) -> None:
    """README: POST /events answers 202 only once every event is confirmed; otherwise 503 with
    Retry-After, saying how many of the batch were enqueued."""
    broker = URL(rabbitmq_url)
    proxy = DropProxy(broker.host or "127.0.0.1", broker.port or 5672)
    port = await proxy.start()
    try:
        transport = make(url=str(broker.with_host("127.0.0.1").with_port(port)), publish_timeout=1.0)
        await transport.connect()
        app = build_app(transport=transport, metrics=Metrics(), is_ready=lambda: True, max_event_bytes=65536)
        async with TestClient(TestServer(app)) as client:
            batch = [{"type": "a.b", "id": f"evt-{n}", "data": {"n": n}} for n in range(3)]
            async with client.post("/events", json=batch) as response:
                assert response.status == 202, await response.text()
            await proxy.stop_accepting()
            proxy.drop()
            async with client.post("/events", json=batch) as response:
                body = await response.json()
                assert response.status == 503 and response.headers["Retry-After"]
        assert body["enqueued"] == 0
        assert body["error"].startswith("could not enqueue 3 of 3 events: an event was not confirmed by RabbitMQ")
    finally:
        await proxy.close()


@pytest.mark.integration
async def test_connection_errors_never_show_the_password(rabbitmq_url: str) -> None:
    wrong = str(URL(rabbitmq_url).with_user("guest").with_password("not-the-s3cret"))
    transport = AmqpTransport(wrong, connect_timeout=5)
    assert "s3cret" not in repr(transport)
    with pytest.raises(TransportError) as caught:
        await transport.connect()
    assert "s3cret" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert not transport.connected


async def test_unreachable_broker_is_a_transport_error_without_the_password() -> None:
    transport = AmqpTransport("amqp://router:t0p-s3cret@127.0.0.1:1/", connect_timeout=2)
    with pytest.raises(TransportError, match="cannot connect to RabbitMQ") as caught:
        await transport.connect()
    assert "t0p-s3cret" not in str(caught.value)
