"""Hostile event content against a real `router serve` (issue 15 items 1, 3, 4, 11).

One router, on the embedded queue, with rules that a publisher's data can attack:

- a ``regex`` condition on a 600 KB message, and a catastrophic-backtracking pattern on 40
  characters: another event's delivery latency stays under 100 ms (RE2, linear time);
- templates that each try one built-in operation past the limits: each is refused (the rule's
  delivery is dead-lettered) and other events keep flowing meanwhile;
- a user named ``@everyone`` in a plain Discord message: the post carries
  ``allowed_mentions: {parse: []}`` and no mention line;
- a webhook answering 302 to another local server: nothing reaches the other server.

Latency is measured from just before ``POST /events`` to the delivery's arrival at a local
sink (same event loop as the test).
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

from tests.fakes import intercept
from tests.fakes.http_sink import HttpSink, Reply
from tests.serve_support import RouterProcess, scrape_metrics

CATASTROPHIC = r"^([a-zA-Z0-9._%+-]+)*@example\.com$"
LATENCY_LIMIT = 0.100
PINGS = 5

BOMBS = {
    "sum": "{{ ([[0]]*100000)|sum(start=[])|length }}",
    "lipsum": "{{ lipsum(n=200000) }}",
    "square": "{% set a = 2**65536 %}" + "{% set a = a*a %}" * 14 + "{{ a % 10 }}",
    "tojson": "{{ [1,[2,[3]]]|tojson(indent=100000000) }}",
    "join": '{% set s = "x"*999999 %}{{ ([s]*300)|join }}',
    "batch": "{{ [1]|batch(50000000, 0)|list|length }}",
}


def bomb_template() -> str:
    branches = "".join(
        f"{'{% if' if i == 0 else '{% elif'} data.kind == '{kind}' %}}{source}"
        for i, (kind, source) in enumerate(BOMBS.items())
    )
    return "{% block title %}bomb{% endblock %}{% block body %}" + branches + "{% endif %}{% endblock %}"


def rules_yaml(fast: HttpSink, origin: HttpSink) -> str:
    return f"""
version: 1
broker: {{prefetch: 16}}
state: {{url: "sqlite:///state.db"}}
defaults:
  retry: {{attempts: 2, backoff: 100ms, max_backoff: 100ms, jitter: 0}}
channels:
  fast: {{type: webhook, url: '{fast.url}/fast'}}
  matched: {{type: webhook, url: '{fast.url}/matched'}}
  bombed: {{type: webhook, url: '{fast.url}/bombed'}}
  redirecting: {{type: webhook, url: '{origin.url}/hook', headers: {{X-Api-Key: k3y-SECRET-value}}}}
  discord: {{type: discord, url: "https://discord.com/api/webhooks/112233/Tok3n-value", embeds: false}}
rules:
  - {{name: timeouts, on: log.line, when: {{data.message: {{regex: 'error.*timeout'}}}}, template: note, channels: [matched]}}
  - {{name: emails, on: log.line, when: {{data.email: {{regex: '{CATASTROPHIC}'}}}}, template: note, channels: [matched]}}
  - {{name: bombs, on: bomb, template: bomb, channels: [bombed]}}
  - {{name: ping, on: ping, template: note, channels: [fast]}}
  - {{name: redirect, on: hook.redirect, template: note, channels: [redirecting]}}
  - {{name: joined, on: user.joined, template: joined, channels: [discord]}}
"""


@pytest.fixture
async def sinks() -> AsyncIterator[tuple[HttpSink, HttpSink, HttpSink, HttpSink]]:
    async with (
        HttpSink(Reply(200, {"ok": True})) as fast,
        HttpSink(Reply(302, b"", {"Location": "http://127.0.0.1:1/never"})) as origin,
        HttpSink(Reply(200, {"ok": True})) as elsewhere,
        HttpSink(Reply(204)) as discord,
    ):
        origin.default = Reply(302, b"", {"Location": f"{elsewhere.url}/steal"})
        yield fast, origin, elsewhere, discord


@pytest.fixture
async def router(tmp_path: Path, sinks: tuple[HttpSink, ...]) -> AsyncIterator[RouterProcess]:
    fast, origin, _, discord = sinks
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "note.j2").write_text(
        "{% block title %}{{ event.type }}{% endblock %}{% block body %}ok{% endblock %}"
    )
    (templates / "bomb.j2").write_text(bomb_template())
    (templates / "joined.j2").write_text(
        "{% block title %}Welcome {{ data.user }}{% endblock %}{% block body %}{{ data.user }} joined{% endblock %}"
    )
    (tmp_path / "rules.yaml").write_text(rules_yaml(fast, origin))
    process = RouterProcess(tmp_path, env=intercept.subprocess_env({"discord.com": discord.url}))
    await process.start()
    yield process
    await process.stop()


async def post(session: aiohttp.ClientSession, router: RouterProcess, events: list[dict[str, Any]]) -> None:
    # No ids: the router gives each event posted without one a fresh unique id (returned in the
    # 202), so the same hostile event posted again in the next round is a new event, not a repeat.
    async with session.post(f"{router.url}/events", json=events) as response:
        assert response.status == 202, await response.text()
        ids = (await response.json())["ids"]
    assert len(ids) == len(events) and len(set(ids)) == len(ids), ids


async def ping_latencies(session: aiohttp.ClientSession, router: RouterProcess, fast: HttpSink) -> list[float]:
    """Post PINGS events one after another; the time each took from POST to arrival at the sink."""
    latencies = []
    for n in range(PINGS):
        before = len([r for r in fast.requests if r.path == "/fast"])
        started = time.monotonic()
        await post(session, router, [{"type": "ping", "source": "probe", "data": {"n": n}}])
        deadline = started + 10
        while len([r for r in fast.requests if r.path == "/fast"]) <= before:
            assert time.monotonic() < deadline, "a ping was not delivered within 10 s"
            await fast.wait_for(len(fast.requests) + 1, timeout=max(deadline - time.monotonic(), 0.01))
        latencies.append(time.monotonic() - started)
    return latencies


async def dead_letters(router: RouterProcess, reason: str | None = None) -> float:
    """``router_dead_letters_total`` for ``reason`` (every reason when None)."""
    samples = await scrape_metrics(router)
    return sum(
        v
        for (name, labels), v in samples.items()
        if name == "router_dead_letters_total" and (reason is None or ("reason", reason) in labels)
    )


async def failed_for_good(router: RouterProcess, rule: str, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
    """The log records of ``rule``'s deliveries that failed permanently or did not render (dead letters)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [
            r
            for r in router.log_records()
            if r.get("rule") == rule and (r.get("outcome") == "failed" or "dead" in json.dumps(r).lower())
        ]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


async def test_regex_conditions_on_hostile_data_do_not_delay_other_events(
    router: RouterProcess, sinks: tuple[HttpSink, ...]
) -> None:
    fast = sinks[0]
    async with aiohttp.ClientSession() as session:
        await ping_latencies(session, router, fast)  # warm: first renders, connections
        quiet = await ping_latencies(session, router, fast)
        hostile = [
            {"type": "log.line", "source": "attacker", "data": {"message": "error " * 100_000}},  # 600 KB
            {"type": "log.line", "source": "attacker", "data": {"email": "a" * 40}},
            {"type": "log.line", "source": "attacker", "data": {"email": "a" * 27 + "!"}},
        ]
        # The machine is shared: a quiet ping sometimes takes 30 ms. One more round of the attack
        # (at most) tells a scheduling hiccup from the engine; the old engine froze both for minutes.
        rounds: list[list[float]] = []
        for _ in range(2):
            for event in hostile:  # one request each: the 600 KB event alone is under the body limit
                await post(session, router, [event])
            rounds.append(await ping_latencies(session, router, fast))
            if max(rounds[-1]) < LATENCY_LIMIT:
                break
        under_attack = min(rounds, key=max)
        # The matching events still work as rules: a real timeout line and a real address fire.
        await post(
            session,
            router,
            [
                {"type": "log.line", "source": "app", "data": {"message": "error: upstream timeout"}},
                {"type": "log.line", "source": "app", "data": {"email": "ada.l@example.com"}},
            ],
        )
        deadline = time.monotonic() + 10
        while len([r for r in fast.requests if r.path == "/matched"]) < 2:
            assert time.monotonic() < deadline, "the matching log lines were not delivered"
            await asyncio.sleep(0.02)
    handled = [r.get("latency_ms") for r in router.log_records() if r.get("type") == "log.line"]
    print("log.line handled in (ms):", handled)
    print(
        f"ping latency quiet: {[round(x * 1000, 1) for x in quiet]} ms; under attack: {[[round(x * 1000, 1) for x in r] for r in rounds]} ms"
    )
    assert max(under_attack) < LATENCY_LIMIT, (quiet, rounds)
    assert len([r for r in fast.requests if r.path == "/matched"]) == 2  # the hostile lines matched nothing


async def test_template_bombs_are_refused_while_other_events_flow(
    router: RouterProcess, sinks: tuple[HttpSink, ...]
) -> None:
    fast = sinks[0]
    async with aiohttp.ClientSession() as session:
        await ping_latencies(session, router, fast)
        started = time.monotonic()
        await post(session, router, [{"type": "bomb", "source": "attacker", "data": {"kind": kind}} for kind in BOMBS])
        during = await ping_latencies(session, router, fast)
        async with session.get(f"{router.url}/healthz", timeout=aiohttp.ClientTimeout(total=2)) as response:
            assert response.status == 200
        found = await failed_for_good(router, "bombs", len(BOMBS))
        elapsed = time.monotonic() - started
    print(f"ping latency while {len(BOMBS)} template bombs render: {[round(x * 1000, 1) for x in during]} ms")
    assert not [r for r in fast.requests if r.path == "/bombed"], "a bomb rendered and was delivered"
    assert len(found) >= len(BOMBS), router.logs()[-3000:]
    assert await dead_letters(router, "render") == len(BOMBS)
    # Each bomb costs at most the 1 s render limit (only `sum` uses it; the others are refused up front).
    assert max(during) < 1.5, during
    assert elapsed < 15


async def test_a_user_named_everyone_pings_nobody(router: RouterProcess, sinks: tuple[HttpSink, ...]) -> None:
    discord = sinks[3]
    async with aiohttp.ClientSession() as session:
        await post(
            session,
            router,
            [{"type": "user.joined", "source": "app", "data": {"user": "@everyone <@&987654321> ada@example.com"}}],
        )
    [request] = await discord.wait_for(1, timeout=15)
    body = request.json()
    assert (
        body["content"]
        == "Welcome @everyone <@&987654321> ada@example.com\r\n@everyone <@&987654321> ada@example.com joined"
    )
    assert body["allowed_mentions"] == {"parse": []}
    assert "allow_mentions" not in body and "👉" not in json.dumps(body, ensure_ascii=False)


async def test_a_redirect_to_another_server_is_not_followed(router: RouterProcess, sinks: tuple[HttpSink, ...]) -> None:
    _, origin, elsewhere, _ = sinks
    async with aiohttp.ClientSession() as session:
        await post(session, router, [{"type": "hook.redirect", "source": "app", "data": {}}])
    await origin.wait_for(1, timeout=15)
    found = await failed_for_good(router, "redirect", 1)
    assert found, router.logs()[-3000:]
    deadline = time.monotonic() + 10
    while await dead_letters(router) < 1:
        assert time.monotonic() < deadline, "the redirected delivery was not dead-lettered"
        await asyncio.sleep(0.05)
    assert "HTTP 302 redirect to 127.0.0.1 not followed" in json.dumps(found)
    assert len(origin.requests) == 1  # permanent: not retried
    assert elsewhere.requests == []
