"""Webhook redirects, with two local HTTP servers: nothing reaches another origin.

Before: aiohttp followed any redirect and re-sent the body and the configured secret headers
(``X-Api-Key``) to the new host, and the delivery counted as sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from router.channels.webhook import MAX_REDIRECTS, WebhookChannel, WebhookConfig
from router.core.message import Message, Outcome
from tests.fakes.http_sink import HttpSink, Reply

SECRET = {"X-Api-Key": "k3y-SECRET-value"}


@pytest.fixture
async def origin() -> AsyncIterator[HttpSink]:
    async with HttpSink(Reply(200, {"ok": True})) as server:
        yield server


@pytest.fixture
async def elsewhere() -> AsyncIterator[HttpSink]:
    async with HttpSink(Reply(200, {"ok": True})) as server:
        yield server


async def send(url: str, **options: Any) -> Outcome:
    channel = WebhookChannel("hook", WebhookConfig(type="webhook", url=url, headers=SECRET, **options))
    try:
        return await channel.send(Message("t", "secret body"))
    finally:
        await channel.aclose()


def redirect(status: int, location: str) -> Reply:
    return Reply(status, b"", {"Location": location})


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_by_default_no_redirect_is_followed(origin: HttpSink, elsewhere: HttpSink, status: int) -> None:
    origin.reply(redirect(status, f"{elsewhere.url}/steal"))
    outcome = await send(f"{origin.url}/hook")
    assert outcome.status == "failed"  # permanent: retrying gets the same answer
    assert f"HTTP {status} redirect to 127.0.0.1 not followed" in outcome.reason
    assert len(origin.requests) == 1
    assert elsewhere.requests == []


async def test_same_origin_mode_follows_within_the_origin(origin: HttpSink) -> None:
    origin.reply(redirect(307, "/moved"), redirect(308, f"{origin.url}/final"))
    outcome = await send(f"{origin.url}/hook", follow_redirects="same-origin")
    assert outcome.ok
    first, second, third = origin.requests
    assert [r.path for r in (first, second, third)] == ["/hook", "/moved", "/final"]
    assert all(r.method == "POST" and r.json()["body"] == "secret body" for r in (first, second, third))
    assert third.headers["x-api-key"] == SECRET["X-Api-Key"]


async def test_same_origin_mode_refuses_another_origin(origin: HttpSink, elsewhere: HttpSink) -> None:
    origin.reply(redirect(302, "/step"), redirect(307, f"{elsewhere.url}/steal"))
    outcome = await send(f"{origin.url}/hook", follow_redirects="same-origin")
    assert outcome.status == "failed"
    assert "HTTP 307 redirect to another origin (127.0.0.1) not followed" in outcome.reason
    assert len(origin.requests) == 2
    assert elsewhere.requests == []  # neither the body nor X-Api-Key left the origin


async def test_redirect_loops_end(origin: HttpSink) -> None:
    origin.reply(*[redirect(307, "/again")] * (MAX_REDIRECTS + 2))
    outcome = await send(f"{origin.url}/hook", follow_redirects="same-origin")
    assert outcome.status == "failed" and f"more than {MAX_REDIRECTS} redirects" in outcome.reason
    assert len(origin.requests) == MAX_REDIRECTS + 1


async def test_the_reason_names_the_host_not_the_path(origin: HttpSink) -> None:
    origin.reply(redirect(301, "https://other.example.com/T0K3Nsecret123abc?key=hunter2"))
    outcome = await send(f"{origin.url}/hook")
    assert "other.example.com" in outcome.reason
    assert "T0K3N" not in outcome.reason and "hunter2" not in outcome.reason
