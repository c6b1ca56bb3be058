"""`router serve` as a subprocess on its embedded default (no broker): the SQLite queue fed by
POST /events, with the retries, dead letters and restarts RabbitMQ users get.

Deliveries are observed at local HTTP sinks (webhook channels). The restart test runs on both
transports: it is the router-level half of the transport contract.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.fakes.http_sink import HttpSink, Recorded, Reply
from tests.polling import until
from tests.serve_support import ROUTER, RouterProcess, Samples, delete_topology, scrape_metrics, unique_names

PREFETCH = 4
TEMPLATE = "{% block title %}{{ event.type }}{% endblock %}{% block body %}n={{ data.n }}{% endblock %}"
FAST_RETRY = "{attempts: 3, backoff: 100ms, max_backoff: 300ms, jitter: 0}"


def embedded_rules(channels: str, rules: str, *, retry: str = FAST_RETRY, broker: str = "{}") -> str:
    """A rules.yaml with SQLite state, on the embedded queue (./.router/queue.db, as shipped)
    unless ``broker`` names a RabbitMQ URL."""
    return f"""
version: 1
broker: {broker}
state: {{url: "sqlite:///state.db"}}
defaults:
  retry: {retry}
channels:
{channels}
rules:
{rules}
"""


def setup_project(root: Path, rules_yaml: str) -> None:
    (root / "templates").mkdir(exist_ok=True)
    (root / "templates" / "note.j2").write_text(TEMPLATE)
    (root / "rules.yaml").write_text(rules_yaml)


def ids(requests: list[Recorded]) -> list[str]:
    return [r.json()["meta"]["event_id"] for r in requests]


@pytest.fixture
async def routers() -> AsyncIterator[list[RouterProcess]]:
    started: list[RouterProcess] = []
    yield started
    for router in started:
        await router.stop()


@pytest.fixture(params=["embedded", pytest.param("amqp", marks=pytest.mark.integration)])
async def broker_section(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """The broker: section of rules.yaml for each transport, with a small prefetch.

    Ask for it before ``routers``: the RabbitMQ topology is deleted after the routers stopped.
    """
    if request.param == "embedded":
        yield f"{{prefetch: {PREFETCH}}}"
        return
    amqp_url = request.getfixturevalue("rabbitmq_url")
    names = unique_names()
    yield f'{{url: "{amqp_url}", exchange: {names["exchange"]}, queue: {names["queue"]}, prefetch: {PREFETCH}}}'
    await delete_topology(amqp_url, names)


async def post_events(router: RouterProcess, events: list[dict[str, Any]] | dict[str, Any]) -> list[str]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{router.url}/events", json=events) as response,
    ):
        body = await response.json()
        assert response.status == 202, body
        return list(body["ids"])


async def run_cli(root: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run a `router` command without blocking the loop the sinks answer on; its stdout."""
    process = await asyncio.create_subprocess_exec(
        ROUTER, *args, cwd=root, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, f"router {' '.join(args)} exited {process.returncode}: {err.decode()}"
    return out.decode()


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


async def test_posted_and_published_events_are_delivered(
    tmp_path: Path, broker_section: str, routers: list[RouterProcess]
) -> None:
    async with HttpSink() as hook:
        setup_project(
            tmp_path,
            embedded_rules(
                f"  hook: {{type: webhook, url: '{hook.url}'}}",
                "  - {name: note, on: '**', template: note, channels: [hook]}",
                broker=broker_section,
            ),
        )
        router = await RouterProcess(tmp_path).start()
        routers.append(router)
        embedded = "url" not in broker_section
        assert (tmp_path / ".router" / "queue.db").exists() == embedded, "no broker configured: the embedded queue"

        one = await post_events(router, {"type": "planet.completed", "id": "evt-1", "data": {"n": 1}})
        many = await post_events(
            router, [{"type": "space.completed", "id": f"evt-{n}", "data": {"n": n}} for n in (2, 3)]
        )
        assert one + many == ["evt-1", "evt-2", "evt-3"]
        # To the configured broker: RabbitMQ (confirmed), or this router's HTTP address.
        (tmp_path / "data.json").write_text('{"n": 4}')
        out = await run_cli(
            tmp_path, "publish", "user.signed_up", "--file", "data.json", "--http", f"127.0.0.1:{router.port}"
        )
        published = out.strip()
        assert re.fullmatch(r"[0-9a-f]{32}", published), f"router publish prints the event id, got {out!r}"

        await hook.wait_for(4)
        by_id = {r.json()["meta"]["event_id"]: r.json() for r in hook.requests}
        assert sorted(by_id) == sorted(["evt-1", "evt-2", "evt-3", published])
        assert by_id[published]["title"] == "user.signed_up" and by_id[published]["body"] == "n=4"
        assert by_id["evt-2"]["body"] == "n=2"
        assert len(hook.requests) == 4


async def test_a_failing_channel_is_retried_until_it_succeeds(tmp_path: Path, routers: list[RouterProcess]) -> None:
    async with HttpSink() as flaky:
        flaky.reply(Reply(503), Reply(429, headers={"Retry-After": "0"}))
        setup_project(
            tmp_path,
            embedded_rules(
                f"  flaky: {{type: webhook, url: '{flaky.url}'}}",
                "  - {name: note, on: '**', template: note, channels: [flaky]}",
            ),
        )
        router = await RouterProcess(tmp_path).start()
        routers.append(router)
        await post_events(router, {"type": "planet.completed", "id": "evt-1", "data": {"n": 1}})
        await flaky.wait_for(3)
        assert ids(flaky.requests) == ["evt-1"] * 3
        await router.wait_for_log(lambda r: r.get("outcome") == "sent" and r.get("attempt") == 3)
        outcomes = [r["outcome"] for r in router.log_records() if r.get("channel") == "flaky"]
        assert outcomes == ["retry", "retry", "sent"]


async def test_dead_letter_is_listed_and_replayed_on_the_embedded_queue(
    tmp_path: Path, routers: list[RouterProcess]
) -> None:
    async with HttpSink(default=Reply(503)) as down:
        setup_project(
            tmp_path,
            embedded_rules(
                f"  down: {{type: webhook, url: '{down.url}/hook?token=SECRETTOKEN'}}",
                "  - {name: note, on: '**', template: note, channels: [down]}",
                retry="{attempts: 2, backoff: 100ms, jitter: 0}",
            ),
        )
        router = await RouterProcess(tmp_path).start()
        routers.append(router)
        await post_events(router, {"type": "planet.completed", "id": "evt-1", "data": {"n": 1}})
        await router.wait_for_log(lambda r: r.get("outcome") == "failed")
        assert len(down.requests) == 2

        listed = await run_cli(tmp_path, "dlq", "list", "--json")
        [letter] = json.loads(listed)
        assert (letter["reason"], letter["rule"], letter["channel"], letter["attempts"]) == (
            "exhausted",
            "note",
            "down",
            2,
        )
        assert letter["event_id"] == "evt-1"
        assert "503" in letter["error"]
        assert "SECRETTOKEN" not in listed + router.logs()

        down.default = Reply(204)  # the channel is back
        replayed = await run_cli(tmp_path, "dlq", "replay", "--all")
        assert replayed.strip() == "replayed 1 dead letter"
        # The running router picks up what another process wrote to its queue file.
        await down.wait_for(3)
        assert ids(down.requests) == ["evt-1"] * 3
        await router.wait_for_log(lambda r: r.get("outcome") == "sent" and r.get("channel") == "down")
        with sqlite3.connect(tmp_path / ".router" / "queue.db") as db:  # what `dlq list` reads
            assert db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0] == 0, "a replayed letter leaves"


async def test_sigterm_waits_for_in_flight_work_and_a_second_one_stops_waiting(
    tmp_path: Path, routers: list[RouterProcess]
) -> None:
    async with HttpSink(default=Reply(hang=True)) as hook:
        setup_project(
            tmp_path,
            embedded_rules(
                f"  hook: {{type: webhook, url: '{hook.url}', timeout: 60s}}",
                "  - {name: note, on: '**', template: note, channels: [hook]}",
            ),
        )
        first = await RouterProcess(tmp_path).start()
        routers.append(first)
        await post_events(first, {"type": "planet.completed", "id": "evt-1", "data": {"n": 1}})
        await hook.wait_for(1)
        first.signal(signal.SIGTERM)
        await first.wait_for_log(lambda r: r.get("msg", "").startswith("shutting down"))
        assert first.proc is not None and first.proc.poll() is None, "waits for the send in flight"
        first.signal(signal.SIGTERM)  # impatient: Ctrl-C again
        assert await first.wait_exit(10) == 0
        assert any("did not finish" in r.get("msg", "") for r in first.log_records())

        hook.default = Reply(204)
        second = await RouterProcess(tmp_path).start()
        routers.append(second)
        await hook.wait_for(2)
        assert ids(hook.requests) == ["evt-1", "evt-1"], "the unfinished event was kept and sent again"


# ------------------------------------------------------------------ restart, on both transports

FLAKY_EVENTS = 3
STUCK_EVENTS = 10


async def test_restart_with_events_queued_and_retries_pending_delivers_each_exactly_once(
    tmp_path: Path, broker_section: str, routers: list[RouterProcess]
) -> None:
    async with HttpSink(default=Reply(hang=True)) as stuck, HttpSink() as flaky:
        flaky.reply(*[Reply(503)] * FLAKY_EVENTS)
        channels = (
            f"  stuck: {{type: webhook, url: '{stuck.url}', timeout: 60s}}\n"
            f"  flaky: {{type: webhook, url: '{flaky.url}'}}"
        )
        rules = (
            "  - {name: hold, on: 'stuck.*', template: note, channels: [stuck]}\n"
            "  - {name: wobble, on: 'flaky.*', template: note, channels: [flaky]}"
        )
        # A 2 s backoff: the retries are still waiting when the process is killed.
        setup_project(
            tmp_path,
            embedded_rules(channels, rules, retry="{attempts: 3, backoff: 2s, jitter: 0}", broker=broker_section),
        )
        first = await RouterProcess(tmp_path).start()
        routers.append(first)

        flaky_ids = await post_events(
            first, [{"type": "flaky.event", "id": f"f-{n}", "data": {"n": n}} for n in range(FLAKY_EVENTS)]
        )
        await until(
            lambda: asyncio.sleep(0, sum(r.get("outcome") == "retry" for r in first.log_records()) == FLAKY_EVENTS),
            "the retries to be scheduled",
        )
        # Every prefetch slot is taken by a send that never answers; the rest stay queued.
        stuck_ids = await post_events(
            first, [{"type": "stuck.event", "id": f"s-{n}", "data": {"n": n}} for n in range(STUCK_EVENTS)]
        )
        await stuck.wait_for(PREFETCH)
        first.signal(signal.SIGKILL)
        await first.wait_exit()
        assert len(flaky.requests) == FLAKY_EVENTS, "the retries were pending at the kill"
        assert len(stuck.requests) == PREFETCH, "the other events were still queued at the kill"
        if "url" not in broker_section:  # embedded: look in the file itself
            with sqlite3.connect(tmp_path / ".router" / "queue.db") as db:
                assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == STUCK_EVENTS
                assert db.execute("SELECT COUNT(*) FROM retries").fetchone()[0] == FLAKY_EVENTS

        stuck.default = Reply(204)  # the hung endpoint recovers
        second = await RouterProcess(tmp_path).start()
        routers.append(second)

        async def drained() -> bool:
            samples = await scrape_metrics(second)
            return (
                total(samples, "router_events_received_total", kind="event") >= STUCK_EVENTS
                and total(samples, "router_events_received_total", kind="retry") >= FLAKY_EVENTS
                and total(samples, "router_events_in_flight") == 0
            )

        await until(drained, "the second router to work through the queue and the retries")
        answered_stuck = ids(stuck.requests[PREFETCH:])  # the first ones never got an answer
        answered_flaky = ids(flaky.requests[FLAKY_EVENTS:])  # the first ones got a 503
        assert sorted(answered_stuck) == sorted(stuck_ids), "each queued event delivered exactly once"
        assert sorted(answered_flaky) == sorted(flaky_ids), "each pending retry delivered exactly once"
        samples = await scrape_metrics(second)
        assert total(samples, "router_deliveries_total", outcome="sent") == STUCK_EVENTS + FLAKY_EVENTS
        assert total(samples, "router_dead_letters_total") == 0
