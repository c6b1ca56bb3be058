"""`router serve` as a subprocess on the real RabbitMQ: delivery, retries, dead letters, crashes.

Applications are played by a plain aio-pika publisher; deliveries are observed at local HTTP
sinks (webhook channels) and at a fake Discord reached by intercepting apprise's request.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.builders import event_bytes
from tests.fakes import intercept
from tests.fakes.http_sink import HttpSink, Reply
from tests.serve_support import ROUTER, RouterProcess, amqp_rules, delete_topology, publish_amqp, unique_names

pytestmark = pytest.mark.integration

TEMPLATE = (
    "{% block title %}{{ data.user }} did {{ event.type }}{% endblock %}{% block body %}n={{ data.n }}{% endblock %}"
)


def event(n: int, *, user: str = "ada", type_: str = "planet.completed") -> tuple[str, bytes]:
    return type_, event_bytes(type_, f"evt-{n}", {"user": user, "n": n})


@pytest.fixture
async def names(rabbitmq_url: str) -> AsyncIterator[dict[str, str]]:
    names = unique_names()
    yield names
    await delete_topology(rabbitmq_url, names)


@pytest.fixture
async def routers() -> AsyncIterator[list[RouterProcess]]:
    started: list[RouterProcess] = []
    yield started
    for router in started:
        await router.stop()


def setup_project(root: Path, rules_yaml: str) -> None:
    (root / "templates").mkdir(exist_ok=True)
    (root / "templates" / "note.j2").write_text(TEMPLATE)
    (root / "rules.yaml").write_text(rules_yaml)


async def test_delivers_to_webhook_and_to_discord_through_apprise(
    tmp_path: Path, rabbitmq_url: str, names: dict[str, str], routers: list[RouterProcess]
) -> None:
    async with HttpSink() as hook, HttpSink() as discord:
        channels = (
            f"  hook: {{type: webhook, url: '{hook.url}/in'}}\n"
            "  chat: {type: discord, url: 'https://discord.com/api/webhooks/123456/SECRETTOKEN'}"
        )
        rules = "  - {name: note, on: 'planet.*', template: note, channels: [hook, chat]}"
        setup_project(tmp_path, amqp_rules(rabbitmq_url, channels=channels, rules=rules, names=names))
        router = RouterProcess(tmp_path, env=intercept.subprocess_env({"discord.com": discord.url}))
        routers.append(await router.start())
        await publish_amqp(rabbitmq_url, names["exchange"], [event(1)])
        [posted] = await hook.wait_for(1)
        assert posted.json()["title"] == "ada did planet.completed"
        assert posted.json()["body"] == "n=1"
        [chat] = await discord.wait_for(1)
        assert chat.original_host == "discord.com"
        assert "/api/webhooks/123456/SECRETTOKEN" in chat.path
        payload = chat.json()
        assert "ada did planet.completed" in json.dumps(payload)
        assert "SECRETTOKEN" not in router.logs()


async def test_retries_until_the_sink_recovers_and_only_the_failing_channel(
    tmp_path: Path, rabbitmq_url: str, names: dict[str, str], routers: list[RouterProcess]
) -> None:
    async with HttpSink() as good, HttpSink() as flaky:
        flaky.reply(Reply(503), Reply(503))
        channels = f"  good: {{type: webhook, url: '{good.url}'}}\n  flaky: {{type: webhook, url: '{flaky.url}'}}"
        rules = "  - {name: note, on: '**', template: note, channels: [good, flaky]}"
        setup_project(tmp_path, amqp_rules(rabbitmq_url, channels=channels, rules=rules, names=names))
        routers.append(await RouterProcess(tmp_path).start())
        await publish_amqp(rabbitmq_url, names["exchange"], [event(1)])
        await flaky.wait_for(3, timeout=20)
        assert [r.json()["meta"]["event_id"] for r in flaky.requests] == ["evt-1"] * 3
        assert len(good.requests) == 1, "the channel that succeeded is never sent again"


async def test_dead_letters_after_the_last_attempt_with_reason(
    tmp_path: Path, rabbitmq_url: str, names: dict[str, str], routers: list[RouterProcess]
) -> None:
    async with HttpSink(default=Reply(503)) as down:
        channels = f"  down: {{type: webhook, url: '{down.url}/hook?token=SECRETTOKEN'}}"
        rules = "  - {name: note, on: '**', template: note, channels: [down]}"
        setup_project(
            tmp_path,
            amqp_rules(
                rabbitmq_url, channels=channels, rules=rules, names=names, retry="{attempts: 2, backoff: 100ms}"
            ),
        )
        router = await RouterProcess(tmp_path).start()
        routers.append(router)
        await publish_amqp(rabbitmq_url, names["exchange"], [event(1)])
        await router.wait_for_log(lambda r: r.get("outcome") == "failed")
        assert len(down.requests) == 2
        listed = subprocess.run(
            [ROUTER, "dlq", "list", "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True
        )
        [letter] = json.loads(listed.stdout)
        assert letter["reason"] == "exhausted"
        assert letter["rule"] == "note" and letter["channel"] == "down"
        assert letter["attempts"] == 2
        assert "503" in letter["error"]
        assert "SECRETTOKEN" not in listed.stdout + router.logs()


async def test_poison_message_is_dead_lettered_while_good_ones_flow(
    tmp_path: Path, rabbitmq_url: str, names: dict[str, str], routers: list[RouterProcess]
) -> None:
    async with HttpSink() as hook:
        channels = f"  hook: {{type: webhook, url: '{hook.url}'}}"
        rules = "  - {name: note, on: '**', template: note, channels: [hook]}"
        setup_project(tmp_path, amqp_rules(rabbitmq_url, channels=channels, rules=rules, names=names))
        router = await RouterProcess(tmp_path).start()
        routers.append(router)
        await publish_amqp(
            rabbitmq_url, names["exchange"], [event(1), ("planet.completed", b"\xff\xfenot json"), event(2)]
        )
        await hook.wait_for(2)
        record = await router.wait_for_log(lambda r: r.get("reason") == "poison")
        assert "UTF-8" in record["error"] or "JSON" in record["error"]
        assert sorted(r.json()["meta"]["event_id"] for r in hook.requests) == ["evt-1", "evt-2"]


async def test_no_duplicate_after_sigkill_between_send_and_acknowledgement(
    tmp_path: Path, rabbitmq_url: str, names: dict[str, str], routers: list[RouterProcess]
) -> None:
    async with HttpSink() as fast, HttpSink() as stuck:
        # `stuck` hangs, so the event cannot be acknowledged; `fast` is sent and recorded meanwhile.
        stuck.reply(Reply(hang=True))
        channels = f"  fast: {{type: webhook, url: '{fast.url}'}}\n  stuck: {{type: webhook, url: '{stuck.url}', timeout: 60s}}"
        rules = "  - {name: note, on: '**', template: note, channels: [fast, stuck]}"
        setup_project(tmp_path, amqp_rules(rabbitmq_url, channels=channels, rules=rules, names=names))
        first = await RouterProcess(tmp_path).start()
        routers.append(first)
        await publish_amqp(rabbitmq_url, names["exchange"], [event(1)])
        await fast.wait_for(1)
        await stuck.wait_for(1)
        await first.wait_for_log(lambda r: r.get("channel") == "fast" and r.get("outcome") == "sent")
        first.signal(signal.SIGKILL)
        await first.wait_exit()

        second = await RouterProcess(tmp_path).start()
        routers.append(second)
        await stuck.wait_for(2, timeout=20)  # the redelivered event reaches the channel that was unresolved
        await second.wait_for_log(lambda r: r.get("channel") == "fast" and r.get("outcome") == "skipped")
        assert len(fast.requests) == 1, "a delivery recorded as sent is never sent again"


async def test_sigterm_finishes_in_flight_work_and_loses_nothing(
    tmp_path: Path, rabbitmq_url: str, names: dict[str, str], routers: list[RouterProcess]
) -> None:
    total = 150
    async with HttpSink() as hook:
        channels = f"  hook: {{type: webhook, url: '{hook.url}', concurrency: 4}}"
        rules = "  - {name: note, on: '**', template: note, channels: [hook]}"
        setup_project(tmp_path, amqp_rules(rabbitmq_url, channels=channels, rules=rules, names=names))
        first = await RouterProcess(tmp_path).start()
        routers.append(first)
        await publish_amqp(rabbitmq_url, names["exchange"], [event(n) for n in range(total)])
        await hook.wait_for(10)
        first.signal(signal.SIGTERM)
        assert await first.wait_exit() == 0
        delivered_before = len(hook.requests)
        assert any("router stopped" in r.get("msg", "") for r in first.log_records())

        second = await RouterProcess(tmp_path).start()
        routers.append(second)
        await hook.wait_for(total, timeout=30)
        ids = [r.json()["meta"]["event_id"] for r in hook.requests]
        assert sorted(set(ids)) == sorted(f"evt-{n}" for n in range(total))
        assert len(ids) == total, f"duplicates after a graceful stop ({delivered_before} before the restart)"
