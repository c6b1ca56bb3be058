"""Hostile input to POST /events on a real `router serve` (embedded queue): each request gets a
clear error, nothing of it is enqueued, and the good event posted right after is delivered.

"Nothing enqueued" is checked on the router's own metrics once the good event is delivered:
exactly one event received and an empty queue (a bad one enqueued before it would show in
either). Truncated requests are written on a raw socket.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from router.ingest.http import MAX_BATCH
from tests.builders import event_bytes
from tests.fakes.http_sink import HttpSink
from tests.serve_support import RouterProcess, scrape_metrics

MB = 1024 * 1024


@pytest.fixture
async def sink() -> AsyncIterator[HttpSink]:
    async with HttpSink() as running:
        yield running


@pytest.fixture
async def router(tmp_path: Path, sink: HttpSink) -> AsyncIterator[RouterProcess]:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "note.j2").write_text("{{ event.type }}")
    (tmp_path / "rules.yaml").write_text(
        f"""
version: 1
state: {{url: "sqlite:///state.db"}}
channels:
  hook: {{type: webhook, url: "{sink.url}"}}
rules:
  - {{name: note, on: "**", template: note, channels: [hook]}}
"""
    )
    process = await RouterProcess(tmp_path, args=("--no-watch",)).start()
    yield process
    await process.stop()


async def post(router: RouterProcess, body: Any, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{router.url}/events", data=body, headers=headers, **kwargs) as response,
    ):
        return response.status, await response.json()


async def assert_only_the_good_event_gets_through(router: RouterProcess, sink: HttpSink) -> None:
    status, body = await post(router, event_bytes("planet.completed", "good"))
    assert (status, body) == (202, {"ids": ["good"]}), "the router still accepts a good event"
    await sink.wait_for(1)
    samples = await scrape_metrics(router)
    received = sum(v for (name, _), v in samples.items() if name == "router_events_received_total")
    assert received == 1, "the bad request enqueued something"
    assert samples[("router_queue_depth", ())] == 0
    assert [r.json()["meta"]["event_id"] for r in sink.requests] == ["good"]
    assert router.proc is not None and router.proc.poll() is None


def chunked(total: int, chunk: int = 64 * 1024) -> Callable[[], AsyncIterator[bytes]]:
    async def body() -> AsyncIterator[bytes]:
        sent = 0
        while sent < total:
            yield b" " * min(chunk, total - sent)
            sent += chunk

    return body


DEEP = b"[" * 100_000


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        pytest.param(b'{"type": "planet.completed", ', 400, "body is not JSON", id="not-json"),
        pytest.param(b"type=planet.completed", 400, "body is not JSON", id="form-encoded"),
        pytest.param(b'{"type": "planet.completed", "data": {"x": "\xff\xfe"}}', 400, "not UTF-8", id="bad-utf8"),
        pytest.param(b'{"type": "a.b", "data": {"x": "\\ud800"}}', 400, "lone UTF-16 surrogate", id="surrogate"),
        pytest.param(
            b'{"type": "planet.completed", "type": "user.deleted"}', 400, "duplicate key 'type'", id="duplicate-key"
        ),
        pytest.param(
            b'{"type": "a.b", "data": {"x": 1e999}}', 400, "body holds a number out of range", id="infinite-number"
        ),
        pytest.param(DEEP, 400, "nested too deeply", id="deep-array"),
        pytest.param(b'{"type": "a.b", "data": {"x": ' + DEEP + b"}}", 400, "nested too deeply", id="deep-data"),
        pytest.param(b'{"id": "x", "data": {"n": 1}}', 400, "event: no event type", id="no-type"),
        pytest.param(
            b'{"specversion": "0.3", "type": "a.b", "id": "x", "source": "/s"}',
            400,
            "unsupported CloudEvents specversion '0.3'",
            id="specversion",
        ),
        pytest.param(
            json.dumps([{"type": "a.b", "id": f"e{n}"} for n in range(10_000)]).encode(),
            413,
            f"at most {MAX_BATCH} events per request, got 10000",
            id="10000-events",
        ),
        pytest.param(
            json.dumps([{"type": "a.b", "id": "e1"}, {"type": "a.b", "id": "e2"}, {"id": "e3"}]).encode(),
            400,
            "event [2]: no event type",
            id="one-bad-in-a-batch",
        ),
    ],
)
async def test_bad_bodies_get_a_clear_error_and_enqueue_nothing(
    router: RouterProcess, sink: HttpSink, body: bytes, status: int, reason: str
) -> None:
    answered, answer = await post(router, body)
    assert answered == status, answer
    assert reason in answer["error"]
    await assert_only_the_good_event_gets_through(router, sink)


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak memory is read from /proc")
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_a_20_mb_body_gets_413_without_being_buffered(
    router: RouterProcess, sink: HttpSink, declared: bool
) -> None:
    assert router.proc is not None
    await post(router, event_bytes("warm.up", "warm"))  # first-request allocations
    await sink.wait_for(1)
    sink.requests.clear()
    before = peak_rss(router.proc.pid)
    body: bytes | Callable[[], AsyncIterator[bytes]] = b" " * (20 * MB) if declared else chunked(20 * MB)
    try:
        status, answer = await post(router, body if isinstance(body, bytes) else body())
    except aiohttp.ClientError:
        # The router may close the connection on a chunked body it stopped reading: that is
        # a refusal too. Nothing may be enqueued either way (checked below).
        status, answer = 413, {"error": "above the limit"}
    assert status == 413, answer
    assert "above the limit" in answer["error"]
    growth = peak_rss(router.proc.pid) - before
    assert growth < 8 * MB, f"the router's peak memory grew by {growth / MB:.1f} MB for a refused 20 MB body"
    status, _ = await post(router, event_bytes("planet.completed", "good"))
    assert status == 202
    await sink.wait_for(1)
    assert [r.json()["meta"]["event_id"] for r in sink.requests] == ["good"]


async def raw_request(router: RouterProcess, data: bytes, *, then: Callable[[], Awaitable[None]] | None = None) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", router.port)
    writer.write(data)
    await writer.drain()
    if then is not None:
        await then()
    writer.close()
    await writer.wait_closed()


async def test_a_truncated_request_enqueues_nothing_and_the_router_keeps_running(
    router: RouterProcess, sink: HttpSink
) -> None:
    # What arrived is a valid event on its own: only the declared length says it is incomplete.
    partial = event_bytes("planet.completed", "truncated")
    head = (
        b"POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(partial) + 1000}\r\n\r\n".encode()
    )
    await raw_request(router, head + partial)
    await router.wait_for_log(lambda r: str(r.get("msg", "")).startswith("ingest request not read to its end"))
    # And a client that closes in the middle of the headers.
    await raw_request(router, b"POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
    async with aiohttp.ClientSession() as session, session.get(f"{router.url}/healthz") as response:
        assert response.status == 200
    await assert_only_the_good_event_gets_through(router, sink)
    assert "Traceback" not in router.logs()
    assert not [r for r in router.log_records() if r.get("level") == "error"], router.logs()[-2000:]


async def test_a_slow_truncated_chunked_request_enqueues_nothing(router: RouterProcess, sink: HttpSink) -> None:
    head = b"POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    event = event_bytes("planet.completed", "truncated")
    chunk = f"{len(event):x}\r\n".encode() + event + b"\r\n"  # no terminating 0-length chunk

    async def pause() -> None:
        await asyncio.sleep(0.2)  # not synchronisation: the router must not act on a partial body meanwhile

    await raw_request(router, head + chunk, then=pause)
    await router.wait_for_log(lambda r: str(r.get("msg", "")).startswith("ingest request not read to its end"))
    await assert_only_the_good_event_gets_through(router, sink)


async def test_expect_100_continue_is_refused_before_the_body_is_sent(router: RouterProcess, sink: HttpSink) -> None:
    async def exchange(head: bytes, body: bytes | None) -> list[bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", router.port)
        try:
            writer.write(head)
            await writer.drain()
            async with asyncio.timeout(15):
                status = await reader.readline()
                if body is None or not status.startswith(b"HTTP/1.1 100"):
                    return [status]
                await reader.readline()  # the blank line after 100 Continue
                writer.write(body)
                await writer.drain()
                return [status, await reader.readline()]
        finally:
            writer.close()

    def head(length: int) -> bytes:
        return (
            b"POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Expect: 100-continue\r\nContent-Length: {length}\r\n\r\n".encode()
        )

    # 20 MB announced: refused at once, and the client never sends a byte of it.
    assert (await exchange(head(20 * MB), None))[0].startswith(b"HTTP/1.1 413 ")
    good = event_bytes("planet.completed", "good")
    status, final = await exchange(head(len(good)), good)
    assert status.startswith(b"HTTP/1.1 100 ") and final.startswith(b"HTTP/1.1 202 ")
    await sink.wait_for(1)
    assert [r.json()["meta"]["event_id"] for r in sink.requests] == ["good"]
