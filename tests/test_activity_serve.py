"""Activity against a real `router serve` (docs/activity.md): the trace of an event with one
channel retried then sent and another dead-lettered, `router activity --json` against its JSON
Schema, the API's CSRF protection and replay, and the API staying off beyond loopback without auth
until a reload sets ui.auth.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest

from tests.fakes.http_sink import HttpSink, Reply
from tests.serve_support import RouterProcess
from tests.test_serve_embedded import embedded_rules, post_events, run_cli, setup_project

SCHEMA = Path(__file__).resolve().parent.parent / "docs" / "activity.schema.json"


@pytest.fixture
async def routers() -> AsyncIterator[list[RouterProcess]]:
    started: list[RouterProcess] = []
    yield started
    for router in started:
        await router.stop()


async def get(router: RouterProcess, path: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(f"{router.url}{path}") as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def story_when(router: RouterProcess, event_id: str, done: Any, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        async with aiohttp.ClientSession() as session, session.get(f"{router.url}/api/events/{event_id}") as response:
            if response.status == 200:
                story = await response.json()
                if done(story):
                    return story
        assert time.monotonic() < deadline, f"no such story of {event_id}: {router.logs()[-2000:]}"
        await asyncio.sleep(0.1)


def settled(story: dict[str, Any]) -> bool:
    return {d["channel"]: d["outcome"] for d in story["deliveries"]} == {"flaky": "sent", "broken": "dead"}


async def test_trace_shows_a_retried_then_sent_channel_and_a_dead_lettered_one(
    tmp_path: Path, routers: list[RouterProcess]
) -> None:
    async with HttpSink() as flaky, HttpSink(Reply(400)) as broken:
        flaky.reply(Reply(503))
        setup_project(
            tmp_path,
            embedded_rules(
                f"  flaky: {{type: webhook, url: '{flaky.url}'}}\n  broken: {{type: webhook, url: '{broken.url}'}}",
                "  - {name: paid, on: 'order.*', template: note, channels: [flaky, broken]}\n"
                "  - {name: signup, on: 'user.*', template: note, channels: [flaky]}",
            ),
        )
        router = await RouterProcess(tmp_path).start()
        routers.append(router)
        await post_events(router, {"type": "order.paid", "id": "ord-1", "data": {"n": 1}})
        story = await story_when(router, "ord-1", settled)
        by_channel = {d["channel"]: d for d in story["deliveries"]}
        assert [a["outcome"] for a in by_channel["flaky"]["attempts"]] == ["retry", "sent"]
        assert by_channel["flaky"]["attempts"][0]["status"] == 503
        assert by_channel["flaky"]["attempts"][0]["retry_at"] is not None
        assert [a["outcome"] for a in by_channel["broken"]["attempts"]] == ["dead"]
        assert by_channel["broken"]["message"]["body"] == "n=1"
        letters = json.loads(await run_cli(tmp_path, "dlq", "list", "--json"))
        assert by_channel["broken"]["dead_letter_id"] in {letter["id"] for letter in letters}
        verdicts = {r["rule"]: (r["verdict"], r["reason"]) for r in story["rules"]}
        assert verdicts["paid"] == ("fired", "")
        assert verdicts["signup"][0] == "not_matched" and "order.paid" in verdicts["signup"][1]

        text = await run_cli(tmp_path, "trace", "ord-1")
        assert "paid -> flaky" in text and "paid -> broken" in text, text
        assert "attempt 1: retry" in text and "attempt 2: sent" in text and "attempt 1: dead" in text, text
        assert "HTTP 503" in text and "HTTP 400" in text and "outcome: dead" in text, text
        assert "rule signup: not_matched" in text, text
        via_api = json.loads(await run_cli(tmp_path, "trace", "ord-1", "--json", "--url", router.url))
        assert settled(via_api)

        # router activity --json (from the store, and through the API) matches the documented schema.
        schema = json.loads(SCHEMA.read_text())
        for args in ((), ("--url", router.url)):
            listed = json.loads(await run_cli(tmp_path, "activity", "--json", *args))
            jsonschema.validate(listed, schema, format_checker=jsonschema.FormatChecker())
            assert listed["events"][0]["channels"] == {"flaky": "sent", "broken": "dead"}
            assert listed["counts"]["dead"] == 1 and listed["counts"]["failed"] == 1
        table = await run_cli(tmp_path, "activity", "--outcome", "dead")
        assert "ord-1" in table and "broken=dead" in table

        # Replay: a POST without the CSRF token is refused; with it, only the dead delivery runs again.
        # (unsafe=True: aiohttp keeps cookies of IP hosts only when asked; browsers always do.)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            async with session.post(f"{router.url}/api/replay", json={"event_ids": ["ord-1"]}) as response:
                assert response.status == 403
            async with session.get(f"{router.url}/api/csrf") as response:
                token = (await response.json())["token"]
            broken.default = Reply(204)
            before = len(flaky.requests)
            async with session.post(
                f"{router.url}/api/replay", json={"event_ids": ["ord-1"]}, headers={"X-CSRF-Token": token}
            ) as response:
                answer = await response.json()
                assert response.status == 200, answer
                assert answer["matched"] == 1 and answer["replayed"] == 1
        await story_when(router, "ord-1", lambda s: all(d["outcome"] == "sent" for d in s["deliveries"]))
        assert len(flaky.requests) == before, "the channel that had succeeded is not sent again"


async def test_info_log_tells_failures_while_routine_lines_wait_for_debug(
    tmp_path: Path, routers: list[RouterProcess]
) -> None:
    """docs/activity.md: at INFO, a retry scheduled and a dead letter are logged; an event handled
    and a delivery sent are not (the activity history tells them); DEBUG adds them."""
    async with HttpSink() as flaky, HttpSink(Reply(400)) as broken:
        setup_project(
            tmp_path,
            embedded_rules(
                f"  flaky: {{type: webhook, url: '{flaky.url}'}}\n  broken: {{type: webhook, url: '{broken.url}'}}",
                "  - {name: paid, on: 'order.*', template: note, channels: [flaky, broken]}",
            ),
        )
        for level, event_id in (("INFO", "ord-info"), ("DEBUG", "ord-debug")):
            flaky.reply(Reply(503))
            router = await RouterProcess(tmp_path, log_level=level).start()
            routers.append(router)
            await post_events(router, {"type": "order.paid", "id": event_id, "data": {"n": 1}})
            # Each attempt's line is written in the same step as its activity record.
            await story_when(router, event_id, settled)
            await router.stop()
            lines = [r for r in router.log_records() if r.get("event_id") == event_id]
            said = {(r["level"], r["msg"], r.get("channel")) for r in lines}
            assert ("info", "delivery retry", "flaky") in said, router.logs()
            assert ("info", "delivery failed", "broken") in said, router.logs()
            routine = {("debug", "delivery sent", "flaky"), ("debug", "event handled", None)}
            if level == "INFO":
                assert not {msg for _, msg, _ in said} & {"delivery sent", "event handled"}, router.logs()
            else:
                assert routine <= said, router.logs()


async def test_api_is_off_beyond_loopback_without_ui_auth(tmp_path: Path, routers: list[RouterProcess]) -> None:
    setup_project(
        tmp_path, embedded_rules("  hook: {type: console}", "  - {name: n, on: '**', template: note, channels: [hook]}")
    )
    router = RouterProcess(tmp_path)
    router.args = ()
    # Bound on every address: the console and the API must stay off and the log must say why.
    import subprocess

    from tests.serve_support import ROUTER

    with open(router.log_path, "ab") as log:
        router.proc = subprocess.Popen(
            [ROUTER, "serve", "--http", f"0.0.0.0:{router.port}", "--log-format", "json"], cwd=tmp_path, stderr=log
        )
    routers.append(router)
    await router.wait_ready(30)
    async with aiohttp.ClientSession() as session, session.get(f"{router.url}/api/activity") as response:
        assert response.status == 404
    assert "beyond loopback" in router.logs()


async def test_a_reload_adding_ui_auth_beyond_loopback_turns_the_api_on(
    tmp_path: Path, routers: list[RouterProcess]
) -> None:
    import os
    import signal
    import subprocess

    from tests.serve_support import ROUTER

    token = "r" * 24
    rules = embedded_rules("  hook: {type: console}", "  - {name: n, on: '**', template: note, channels: [hook]}")
    setup_project(tmp_path, rules)
    router = RouterProcess(tmp_path)
    with open(router.log_path, "ab") as log:
        router.proc = subprocess.Popen(
            [ROUTER, "serve", "--http", f"0.0.0.0:{router.port}", "--log-format", "json"],
            cwd=tmp_path,
            stderr=log,
            env={**os.environ, "UI_TOKEN": token},
        )
    routers.append(router)
    await router.wait_ready(30)
    bearer = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.get(f"{router.url}/api/activity", headers=bearer) as response:
            assert response.status == 404
        (tmp_path / "rules.yaml").write_text(rules + "ui: {auth: {bearer: '${UI_TOKEN}'}}\n")
        router.signal(signal.SIGHUP)
        await router.wait_for_log(lambda r: r.get("msg") == "configuration reloaded")
        async with session.get(f"{router.url}/api/activity") as response:
            assert response.status == 401 and response.headers["WWW-Authenticate"].startswith("Bearer ")
        async with session.get(f"{router.url}/api/activity", headers=bearer) as response:
            assert response.status == 200, await response.text()
        # The same guard checks CSRF on the API's POSTs, the token notwithstanding.
        replay = {"event_ids": ["nothing"]}
        async with session.post(f"{router.url}/api/replay", json=replay, headers=bearer) as response:
            assert response.status == 403 and "CSRF" in (await response.json())["error"]
        async with session.get(f"{router.url}/api/csrf", headers=bearer) as response:
            csrf = (await response.json())["token"]
        headers = {**bearer, "X-CSRF-Token": csrf}
        async with session.post(f"{router.url}/api/replay", json=replay, headers=headers) as response:
            assert response.status == 200 and (await response.json())["skipped"] == 1


async def test_ui_auth_bearer_guards_the_api(tmp_path: Path, routers: list[RouterProcess]) -> None:
    token = "t" * 24
    rules = embedded_rules("  hook: {type: console}", "  - {name: n, on: '**', template: note, channels: [hook]}")
    setup_project(tmp_path, rules + "ui: {auth: {bearer: '${UI_TOKEN}'}}\n")
    import os

    router = await RouterProcess(tmp_path, env={**os.environ, "UI_TOKEN": token}).start()
    routers.append(router)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{router.url}/api/activity") as response:
            assert response.status == 401 and "Bearer" in response.headers["WWW-Authenticate"]
        async with session.get(f"{router.url}/api/activity", headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status == 200
        async with session.get(
            f"{router.url}/api/activity?outcome=bogus", headers={"Authorization": f"Bearer {token}"}
        ) as response:
            assert response.status == 400 and "outcome" in (await response.json())["error"]


async def test_router_replay_lists_by_filter_then_replays_with_yes(
    tmp_path: Path, routers: list[RouterProcess]
) -> None:
    async with HttpSink(Reply(400)) as down, HttpSink() as fine:
        setup_project(
            tmp_path,
            embedded_rules(
                f"  down: {{type: webhook, url: '{down.url}'}}\n  fine: {{type: webhook, url: '{fine.url}'}}",
                "  - {name: paid, on: 'order.*', template: note, channels: [down, fine]}\n"
                "  - {name: other, on: 'user.*', template: note, channels: [down]}",
            ),
        )
        router = await RouterProcess(tmp_path).start()
        routers.append(router)
        await post_events(router, [{"type": "order.paid", "id": f"o-{n}", "data": {"n": n}} for n in range(3)])
        await post_events(router, {"type": "user.new", "id": "u-1", "data": {"n": 9}})
        for event_id in ("o-0", "o-1", "o-2", "u-1"):
            await story_when(router, event_id, lambda s: s["outcome"] == "dead")

        listed = await run_cli(tmp_path, "replay", "--outcome", "dead", "--rule", "paid")
        assert sorted(listed.split()[:3]) == ["o-0", "o-1", "o-2"] and "u-1" not in listed
        assert "3 event(s) would be replayed; run again with --yes" in listed
        assert len(down.requests) == 4, "nothing is replayed without --yes"

        down.default = Reply(204)
        fine_before = len(fine.requests)
        done = await run_cli(tmp_path, "replay", "--outcome", "dead", "--rule", "paid", "--yes")
        assert "replayed 3 dead letter(s) of 3 event(s)" in done, done
        for event_id in ("o-0", "o-1", "o-2"):
            await story_when(router, event_id, lambda s: s["outcome"] == "sent")
        assert len(fine.requests) == fine_before, "deliveries that had succeeded are not re-run"
        story = await get(router, "/api/events/u-1")
        assert story["outcome"] == "dead", "an event outside the filter is left alone"
