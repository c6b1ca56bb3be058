"""What only the embedded (SQLite) transport does, and how open_transport picks a transport."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from router.config.models import BrokerConfig
from router.transports import open_transport
from router.transports.amqp import AmqpTransport
from router.transports.base import Incoming, TransportError
from router.transports.embedded import EmbeddedTransport

WAIT = 10.0


@pytest.fixture
async def opened(tmp_path: Path) -> AsyncIterator[list[EmbeddedTransport]]:
    """Transports a test opens; all are closed at the end."""
    transports: list[EmbeddedTransport] = []
    yield transports
    for transport in transports:
        await transport.close()


async def open_queue(opened: list[EmbeddedTransport], path: Path, **options: float | None) -> EmbeddedTransport:
    transport = EmbeddedTransport(path, **options)
    opened.append(transport)
    await transport.connect()
    return transport


def rows(path: Path, table: str) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


async def test_many_concurrent_publishers_are_each_delivered_once(
    opened: list[EmbeddedTransport], tmp_path: Path
) -> None:
    transport = await open_queue(opened, tmp_path / "q.db")
    seen: list[bytes] = []
    done = asyncio.Event()
    total = 2000

    async def handler(message: Incoming) -> None:
        seen.append(message.body)
        assert message.ack is not None
        await message.ack()
        if len(seen) == total:
            done.set()

    await transport.start(handler, prefetch=64)
    # Group commit: these share transactions, yet each returns only once its row is stored.
    await asyncio.gather(*(transport.publish_event(str(n).encode(), routing_key="k") for n in range(total)))
    await asyncio.wait_for(done.wait(), WAIT)

    assert sorted(seen) == sorted(str(n).encode() for n in range(total))
    await transport.close()
    assert rows(tmp_path / "q.db", "events") == 0


async def test_publish_is_on_disk_when_it_returns(opened: list[EmbeddedTransport], tmp_path: Path) -> None:
    transport = await open_queue(opened, tmp_path / "q.db")
    await transport.publish_event(b"durable", routing_key="k")
    # Read by another connection while the transport is still open: committed, not buffered.
    assert rows(tmp_path / "q.db", "events") == 1


async def test_rows_written_by_another_process_are_picked_up(opened: list[EmbeddedTransport], tmp_path: Path) -> None:
    consumer = await open_queue(opened, tmp_path / "q.db", poll_interval=0.05)
    messages: asyncio.Queue[Incoming] = asyncio.Queue()
    await consumer.start(messages.put, prefetch=4)

    # `router publish` from the command line opens the same file without consuming it.
    cli = await open_queue(opened, tmp_path / "q.db")
    await cli.publish_event(b"from the cli", routing_key="k")
    message = await asyncio.wait_for(messages.get(), WAIT)
    assert (message.body, message.redelivered) == (b"from the cli", False)


async def test_requeued_message_goes_to_the_front(opened: list[EmbeddedTransport], tmp_path: Path) -> None:
    transport = await open_queue(opened, tmp_path / "q.db")
    for body in (b"a", b"b"):
        await transport.publish_event(body, routing_key="k")
    messages: asyncio.Queue[Incoming] = asyncio.Queue()
    await transport.start(messages.put, prefetch=1)

    first = await asyncio.wait_for(messages.get(), WAIT)
    assert first.body == b"a" and first.requeue is not None
    await first.requeue()
    again = await asyncio.wait_for(messages.get(), WAIT)
    assert (again.body, again.redelivered) == (b"a", True)


async def test_headers_that_cannot_be_stored_are_refused_up_front(
    opened: list[EmbeddedTransport], tmp_path: Path
) -> None:
    transport = await open_queue(opened, tmp_path / "q.db")
    with pytest.raises(TypeError, match="cannot be stored"):
        await transport.publish_event(b"x", routing_key="k", headers={"when": object()})
    assert await transport.queue_depth() == 0


async def test_a_closed_queue_refuses_work(tmp_path: Path) -> None:
    transport = EmbeddedTransport(tmp_path / "q.db")
    await transport.connect()
    await transport.close()
    assert not transport.connected
    with pytest.raises(TransportError, match="closed"):
        await transport.publish_event(b"x", routing_key="k")


async def test_an_unusable_path_is_a_transport_error(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("not a folder")
    transport = EmbeddedTransport(tmp_path / "taken" / "q.db")
    with pytest.raises(TransportError, match="embedded queue"):
        await transport.connect()


async def test_the_queue_folder_is_created(opened: list[EmbeddedTransport], tmp_path: Path) -> None:
    await open_queue(opened, tmp_path / ".router" / "nested" / "queue.db")
    assert (tmp_path / ".router" / "nested" / "queue.db").exists()


def test_open_transport_picks_rabbitmq_for_amqp_urls() -> None:
    config = BrokerConfig(url="amqps://u:p@broker/vh", exchange="ex", queue="q", queue_type="quorum", bindings=["a.*"])
    transport = open_transport(config)
    assert isinstance(transport, AmqpTransport)
    assert (transport.exchange, transport.queue, transport.queue_type, transport.bindings) == (
        "ex",
        "q",
        "quorum",
        ("a.*",),
    )


def test_open_transport_defaults_to_the_embedded_queue(tmp_path: Path) -> None:
    transport = open_transport(BrokerConfig(url="", embedded_path=str(tmp_path / "queue.db")))
    assert isinstance(transport, EmbeddedTransport)
    assert transport.path == tmp_path / "queue.db"


def test_open_transport_rejects_other_urls_without_echoing_them() -> None:
    with pytest.raises(ValueError, match="amqp://") as caught:
        open_transport(BrokerConfig(url="redis://:hunter2@host"))
    assert "hunter2" not in str(caught.value)


async def test_a_backlog_of_events_does_not_starve_due_retries(opened: list[EmbeddedTransport], tmp_path: Path) -> None:
    transport = await open_queue(opened, tmp_path / "q.db")
    for n in range(20):
        await transport.publish_event(f"e{n}".encode(), routing_key="k")
    await transport.schedule_retry(b"retry", delay=0, headers={})
    order: list[bytes] = []
    done = asyncio.Event()

    async def handler(message: Incoming) -> None:
        order.append(message.body)
        assert message.ack is not None
        await message.ack()
        if len(order) == 21:
            done.set()

    await transport.start(handler, prefetch=4)
    await asyncio.wait_for(done.wait(), WAIT)
    assert order.index(b"retry") < 4
