"""The transport contract: both transports (RabbitMQ and embedded SQLite) behave the same.

Every test runs against each transport. ``make`` builds a transport instance on the same
queue (or file) each time it is called, which is how a test stands for a restart.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from router.transports.amqp import AmqpTransport
from router.transports.base import (
    H_ATTEMPTS,
    H_CHANNEL,
    H_ERROR,
    H_EVENT_ID,
    H_REASON,
    H_RULE,
    DeadLetter,
    Incoming,
    Transport,
)
from router.transports.embedded import EmbeddedTransport

Make = Callable[[], Transport]
WAIT = 10.0  # generous upper bound for something that should happen promptly
QUIET = 0.3  # how long "nothing arrives" is watched for


@pytest.fixture(params=[pytest.param("amqp", marks=pytest.mark.integration), "embedded"])
async def make(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Make]:
    created: list[Transport] = []
    if request.param == "amqp":
        url: str = request.getfixturevalue("rabbitmq_url")
        name = f"test-contract-{uuid.uuid4().hex[:12]}"

        def build() -> Transport:
            return AmqpTransport(url, exchange=f"{name}.events", queue=name, reconnect_interval=0.2)
    else:

        def build() -> Transport:
            # No idle polling: due retries must wake the consumer through the timer alone.
            return EmbeddedTransport(tmp_path / "queue.db", poll_interval=None)

    def make_one() -> Transport:
        transport = build()
        created.append(transport)
        return transport

    yield make_one

    for transport in created:
        await transport.close()
    if request.param == "amqp":
        cleaner = build()
        assert isinstance(cleaner, AmqpTransport)
        await cleaner.connect()
        await cleaner.delete_topology()
        await cleaner.close()


class Inbox:
    """A handler that collects what it is given."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[Incoming] = asyncio.Queue()

    async def __call__(self, message: Incoming) -> None:
        await self.messages.put(message)

    async def next(self, timeout: float = WAIT) -> Incoming:
        return await asyncio.wait_for(self.messages.get(), timeout)

    async def assert_quiet(self, period: float = QUIET) -> None:
        with pytest.raises(TimeoutError):
            message = await asyncio.wait_for(self.messages.get(), period)
            pytest.fail(f"unexpected delivery: {message.body!r}")


async def settle(message: Incoming, how: str = "ack") -> None:
    action = message.ack if how == "ack" else message.requeue
    assert action is not None
    await action()


async def consuming(make: Make, *, prefetch: int = 10) -> tuple[Transport, Inbox]:
    transport = make()
    await transport.connect()
    inbox = Inbox()
    await transport.start(inbox, prefetch=prefetch)
    return transport, inbox


async def test_published_event_reaches_the_handler_with_its_metadata(make: Make) -> None:
    transport, inbox = await consuming(make)
    await transport.publish_event(
        b'{"type": "planet.completed"}',
        routing_key="planet.completed",
        headers={"ce-source": "tests", "x-count": 3},
        content_type="application/json",
    )

    message = await inbox.next()
    assert message.kind == "event"
    assert message.body == b'{"type": "planet.completed"}'
    assert message.routing_key == "planet.completed"
    assert message.headers == {"ce-source": "tests", "x-count": 3}
    assert message.content_type == "application/json"
    assert message.redelivered is False
    await settle(message)


async def test_a_batch_is_published_durably_and_in_order(make: Make) -> None:
    """``publish_events`` (what POST /events uses): every event durable on return, in order, with
    its routing key and content type; a body larger than an AMQP frame (128 KiB) included."""
    transport, inbox = await consuming(make, prefetch=1)
    bodies = [f"e{n}".encode() for n in range(40)] + [bytes(range(256)) * 1200] + [b"last"]
    batch = [(body, f"batch.{n}") for n, body in enumerate(bodies)]
    assert await transport.publish_events(batch, content_type="application/cloudevents+json") == [None] * len(batch)
    for body, key in batch:
        message = await inbox.next()
        assert (message.body, message.routing_key) == (body, key)
        assert message.content_type == "application/cloudevents+json" and message.kind == "event"
        await settle(message)
    await inbox.assert_quiet()


async def test_acked_event_is_gone_for_the_next_instance(make: Make) -> None:
    first, inbox = await consuming(make)
    await first.publish_event(b"acked", routing_key="a")
    await settle(await inbox.next())
    await first.close()

    second, inbox = await consuming(make)
    await second.publish_event(b"marker", routing_key="a")
    # Delivery is in order: had "acked" come back, it would arrive before the marker.
    assert (await inbox.next()).body == b"marker"


async def test_requeued_event_is_delivered_again_as_redelivered(make: Make) -> None:
    transport, inbox = await consuming(make)
    await transport.publish_event(b"again", routing_key="a")
    first = await inbox.next()
    assert first.redelivered is False
    await settle(first, "requeue")

    second = await inbox.next()
    assert (second.body, second.kind, second.redelivered) == (b"again", "event", True)
    await settle(second)


async def test_handler_failure_requeues_the_message(make: Make) -> None:
    transport = make()
    await transport.connect()
    inbox = Inbox()
    calls = 0

    async def flaky(message: Incoming) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("handler bug")
        await inbox(message)

    await transport.start(flaky, prefetch=5)
    await transport.publish_event(b"survives", routing_key="a")
    message = await inbox.next()
    assert (message.body, message.redelivered) == (b"survives", True)


async def test_unacked_events_come_back_after_close(make: Make) -> None:
    first, inbox = await consuming(make)
    await first.publish_event(b"one", routing_key="a")
    await first.publish_event(b"two", routing_key="a")
    held = [await inbox.next(), await inbox.next()]
    assert {m.body for m in held} == {b"one", b"two"}
    await first.close()

    _, inbox = await consuming(make)
    again = [await inbox.next(), await inbox.next()]
    assert [(m.body, m.redelivered) for m in again] == [(b"one", True), (b"two", True)]


async def test_retry_comes_back_after_its_delay_with_its_headers(make: Make) -> None:
    transport, inbox = await consuming(make)
    headers = {H_ATTEMPTS: 2, H_RULE: "planet-completed", H_CHANNEL: "discord-general"}

    started = time.monotonic()
    used = await transport.schedule_retry(b"retry-record", delay=0.3, headers=headers)
    message = await inbox.next()
    elapsed = time.monotonic() - started

    assert used >= 0.3
    assert elapsed >= 0.3
    assert (message.kind, message.body, message.headers) == ("retry", b"retry-record", headers)
    await settle(message)


async def test_pending_retry_survives_a_restart(make: Make) -> None:
    first = make()
    await first.connect()
    await first.schedule_retry(b"later", delay=0.3, headers={H_ATTEMPTS: 1})
    await first.close()

    _, inbox = await consuming(make)
    message = await inbox.next()
    assert (message.kind, message.body, message.headers) == ("retry", b"later", {H_ATTEMPTS: 1})


async def test_retry_without_delay_is_due_at_once(make: Make) -> None:
    transport, inbox = await consuming(make)
    assert await transport.schedule_retry(b"now", delay=0, headers={}) == 0
    message = await inbox.next()
    assert (message.kind, message.body) == ("retry", b"now")


async def dead(transport: Transport, body: bytes, **fields: object) -> None:
    headers = {H_REASON: "permanent", H_ERROR: "HTTP 404", H_RULE: "r", H_CHANNEL: "c", H_ATTEMPTS: 3}
    headers.update({f"x-router-{k.replace('_', '-')}": v for k, v in fields.items()})
    await transport.dead_letter(body, headers=headers)


async def test_dead_letter_is_listed_with_its_reason(make: Make) -> None:
    transport = make()
    await transport.connect()
    before = time.time()
    await transport.dead_letter(
        b'{"id": "e1"}',
        headers={
            H_REASON: "exhausted",
            H_ERROR: "HTTP 503 from discord",
            H_RULE: "planet-completed",
            H_CHANNEL: "discord-general",
            H_ATTEMPTS: 5,
            H_EVENT_ID: "e1",
        },
    )

    [letter] = await transport.dlq_list()
    assert letter.id
    assert (letter.reason, letter.error) == ("exhausted", "HTTP 503 from discord")
    assert (letter.rule, letter.channel, letter.attempts, letter.event_id) == (
        "planet-completed",
        "discord-general",
        5,
        "e1",
    )
    assert letter.body == b'{"id": "e1"}'
    assert letter.dead_at is not None and before - 1 <= letter.dead_at <= time.time() + 1
    # Listing does not consume.
    assert [x.id for x in await transport.dlq_list()] == [letter.id]


async def test_dlq_list_is_oldest_first_and_limited(make: Make) -> None:
    transport = make()
    await transport.connect()
    for body in (b"a", b"b", b"c"):
        await dead(transport, body)
    assert [x.body for x in await transport.dlq_list(limit=2)] == [b"a", b"b"]
    assert [x.body for x in await transport.dlq_list()] == [b"a", b"b", b"c"]


async def test_replaying_one_letter_republishes_and_removes_only_it(make: Make) -> None:
    transport = make()
    await transport.connect()
    await dead(transport, b"first")
    await dead(transport, b"second")
    first, second = await transport.dlq_list()

    seen: list[DeadLetter] = []

    async def republish(letter: DeadLetter) -> None:
        seen.append(letter)

    replayed = await transport.dlq_replay([first.id], republish)
    assert [x.id for x in replayed] == [first.id]
    assert [(x.id, x.body) for x in seen] == [(first.id, b"first")]
    assert [x.id for x in await transport.dlq_list()] == [second.id]


async def test_replaying_all_letters_empties_the_queue(make: Make) -> None:
    transport = make()
    await transport.connect()
    await dead(transport, b"first")
    await dead(transport, b"second")
    seen: list[bytes] = []

    async def republish(letter: DeadLetter) -> None:
        seen.append(letter.body)

    await transport.dlq_replay(None, republish)
    assert seen == [b"first", b"second"]
    assert await transport.dlq_list() == []


async def test_failed_republish_keeps_the_letter(make: Make) -> None:
    transport = make()
    await transport.connect()
    await dead(transport, b"keep")

    async def broken(letter: DeadLetter) -> None:
        raise ConnectionError("target down")

    with pytest.raises(ConnectionError):
        await transport.dlq_replay(None, broken)
    assert [x.body for x in await transport.dlq_list()] == [b"keep"]


async def test_purge_empties_the_dead_letter_queue(make: Make) -> None:
    transport = make()
    await transport.connect()
    await dead(transport, b"a")
    await dead(transport, b"b")
    assert await transport.dlq_purge() == 2
    assert await transport.dlq_list() == []


async def test_at_most_prefetch_handlers_run_at_once(make: Make) -> None:
    transport = make()
    await transport.connect()
    for n in range(6):
        await transport.publish_event(f"e{n}".encode(), routing_key="a")

    running = peak = 0
    release = asyncio.Event()
    started: asyncio.Queue[bytes] = asyncio.Queue()

    async def slow(message: Incoming) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        started.put_nowait(message.body)
        await release.wait()
        running -= 1
        await settle(message)

    await transport.start(slow, prefetch=2)
    first_two = {await asyncio.wait_for(started.get(), WAIT) for _ in range(2)}
    with pytest.raises(TimeoutError):  # a third must wait for a free slot
        await asyncio.wait_for(started.get(), QUIET)
    release.set()
    rest = {await asyncio.wait_for(started.get(), WAIT) for _ in range(4)}

    assert first_two | rest == {f"e{n}".encode() for n in range(6)}
    assert peak == 2


async def test_stop_consuming_stops_deliveries_but_in_flight_ack_works(make: Make) -> None:
    transport, inbox = await consuming(make)
    await transport.publish_event(b"in-flight", routing_key="a")
    in_flight = await inbox.next()

    await transport.stop_consuming()
    await transport.publish_event(b"after-stop", routing_key="a")
    await inbox.assert_quiet()
    await settle(in_flight)
    await transport.close()

    _, inbox = await consuming(make)
    # Had the in-flight ack been lost, "in-flight" (older) would come back first.
    assert (await inbox.next()).body == b"after-stop"


async def test_queue_depth_counts_waiting_events(make: Make) -> None:
    transport = make()
    await transport.connect()
    for n in range(3):
        await transport.publish_event(f"e{n}".encode(), routing_key="a")
    assert await transport.queue_depth() == 3
    assert transport.connected


async def test_ack_and_requeue_never_raise_after_close(make: Make) -> None:
    transport, inbox = await consuming(make)
    await transport.publish_event(b"x", routing_key="a")
    message = await inbox.next()
    await transport.close()
    assert not transport.connected
    await settle(message)  # goes nowhere, but is not an error
    await settle(message, "requeue")
