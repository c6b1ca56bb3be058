"""Failure notifications (``on_failure``): every dead letter tells the ops channels, once, never recursively.

End to end on the embedded queue and SQLite state (both real); channels are webhooks posting
to local HTTP sinks (tests/fakes/http_sink.py), so the failures are real HTTP failures.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from router.core.errors import ConfigError
from router.jobs.base import Job, JobContext
from router.plugins.registry import Registry
from router.runtime.runtime import build_runtime
from router.transports.amqp import AmqpTransport
from router.transports.base import H_RULE
from tests.builders import event_bytes
from tests.engine_support import Harness, start_harness, until, write_config
from tests.engine_support import test_registry as registry_for_tests
from tests.fakes.http_sink import HttpSink, Recorded, Reply

TEMPLATES = {
    "hello.j2": "{% block title %}Hi {{ data.name }}{% endblock %}{% block body %}{{ data.name }} did it{% endblock %}",
    "broken.j2": "{% block body %}{{ data.missing.deeper }}{% endblock %}",
    "failed.j2": (
        "{% block title %}FAILED {{ failure.reason }}{% endblock %}"
        "{% block body %}reason={{ failure.reason }} error={{ failure.error }} attempts={{ failure.attempts }}"
        " rule={{ failure.rule }} channel={{ failure.channel }} type={{ failure.channel_type }}"
        " event={{ event.id if event else 'none' }} name={{ data.name | default('-') }}"
        " rule_view={{ rule.name | default('-') }} to={{ channel.name }}{% endblock %}"
    ),
    "x_failed.j2": "{% block title %}X{% endblock %}{% block body %}override {{ failure.rule }}{% endblock %}",
}

FAST_RETRY = "{attempts: 2, backoff: 50ms, max_backoff: 100ms, jitter: 0}"


def config(channels: str, rules: str, *, defaults_on_failure: str = "{template: failed, channels: [ops]}") -> str:
    return f"""
version: 1
defaults:
  retry: {FAST_RETRY}
  on_failure: {defaults_on_failure}
channels:
{channels}
rules:
{rules}
"""


def event(name: str = "Ada", event_id: str = "evt-1") -> bytes:
    return event_bytes("user.signed_up", event_id, {"name": name})


def hook(name: str, sink: HttpSink, path: str = "/hook") -> str:
    return f"  {name}: {{type: webhook, url: '{sink.url}{path}'}}"


Factory = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def harness_factory(tmp_path: Path) -> AsyncIterator[Factory]:
    harnesses: list[Harness] = []

    async def make(rules_yaml: str, registry: Registry | None = None) -> Harness:
        harness = await start_harness(tmp_path, rules_yaml, TEMPLATES, registry=registry)
        harnesses.append(harness)
        return harness

    yield make
    for harness in harnesses:
        await harness.close()


@pytest.fixture
async def sinks() -> AsyncIterator[Callable[[Reply], Awaitable[HttpSink]]]:
    started: list[HttpSink] = []

    async def make(default: Reply) -> HttpSink:
        sink = await HttpSink(default).start()
        started.append(sink)
        return sink

    yield make
    for sink in started:
        await sink.stop()


def counter(h: Harness, metric: str, *labels: str) -> float:
    value: float = getattr(h.metrics, metric).labels(*labels)._value.get()
    return value


async def settled(h: Harness) -> None:
    """Every message taken so far is resolved (acknowledged, its retries and notifications done)."""
    await until(lambda: h.metrics.in_flight._value.get() == 0)


def notification(request: Recorded) -> dict[str, Any]:
    payload: dict[str, Any] = request.json()
    return payload


async def test_permanent_failure_is_dead_lettered_and_notifies_ops(harness_factory: Factory, sinks: Any) -> None:
    bad, ops = await sinks(Reply(400)), await sinks(Reply(204))
    rules = "  - {name: hello, on: '**', template: hello, channels: [bad]}"
    h = await harness_factory(config(f"{hook('bad', bad)}\n{hook('ops', ops)}", rules))
    await h.publish(event())
    [request] = await ops.wait_for(1)
    sent = notification(request)
    assert sent["title"] == "FAILED permanent"
    body = sent["body"]
    assert "reason=permanent" in body and "error=HTTP 400 Bad Request" in body and "attempts=1" in body
    assert "rule=hello channel=bad type=webhook event=evt-1 name=Ada rule_view=hello to=ops" in body
    failure = sent["meta"]["failure"]
    assert failure["reason"] == "permanent" and failure["attempts"] == 1 and failure["channel"] == "bad"
    assert failure["event_id"] == "evt-1" and failure["event_type"] == "user.signed_up"
    assert sent["meta"]["rule"] == "hello:on_failure:bad"
    [letter] = await h.transport.dlq_list()
    assert letter.reason == "permanent" and letter.headers[H_RULE] == "hello"
    await settled(h)
    assert len(bad.requests) == 1 and len(ops.requests) == 1
    assert counter(h, "failure_notifications", "notified") == 1


async def test_exhausted_retries_notify_once(harness_factory: Factory, sinks: Any) -> None:
    bad, ops = await sinks(Reply(503)), await sinks(Reply(204))
    rules = "  - {name: hello, on: '**', template: hello, channels: [bad]}"
    h = await harness_factory(config(f"{hook('bad', bad)}\n{hook('ops', ops)}", rules))
    await h.publish(event())
    [request] = await ops.wait_for(1)
    body = notification(request)["body"]
    assert "reason=exhausted" in body and "attempts=2" in body and "HTTP 503 Service Unavailable" in body
    await settled(h)
    assert len(bad.requests) == 2, "attempts: 2 sends twice"
    assert counter(h, "deliveries", "bad", "retry") == 1 and counter(h, "deliveries", "bad", "failed") == 1
    assert len(ops.requests) == 1 and counter(h, "deliveries", "ops", "sent") == 1


async def test_render_error_notifies_with_the_rule(harness_factory: Factory, sinks: Any) -> None:
    ops = await sinks(Reply(204))
    rules = "  - {name: bad-template, on: '**', template: broken, channels: [ops]}"
    h = await harness_factory(config(hook("ops", ops), rules))
    await h.publish(event())
    [request] = await ops.wait_for(1)
    sent = notification(request)
    assert sent["title"] == "FAILED render"
    assert "rule=bad-template channel=None" in sent["body"] and "event=evt-1" in sent["body"]
    assert "broken.j2" in sent["meta"]["failure"]["error"]
    assert sent["meta"]["rule"] == "bad-template:on_failure"
    [letter] = await h.transport.dlq_list()
    assert letter.reason == "render"


class BoomJob(Job):
    """A job plugin whose work always fails."""

    name = "boom"

    async def handle(self, ctx: JobContext) -> None:
        raise RuntimeError("the database is down")


async def test_a_job_that_keeps_failing_notifies_once_with_its_rule(harness_factory: Factory, sinks: Any) -> None:
    ops = await sinks(Reply(204))
    registry = registry_for_tests()
    registry.jobs["boom"] = BoomJob
    h = await harness_factory(config(hook("ops", ops), "  - {name: audit, on: '**', job: boom}"), registry)
    await h.publish(event())
    [request] = await ops.wait_for(1)
    sent = notification(request)
    assert sent["title"] == "FAILED exhausted"
    assert "error=job boom raised RuntimeError attempts=2 rule=audit channel=None" in sent["body"]
    await until(lambda: counter(h, "dead_letters", "exhausted") == 1)
    await settled(h)
    assert len(ops.requests) == 1


async def test_a_failing_ops_channel_is_dead_lettered_without_recursion(harness_factory: Factory, sinks: Any) -> None:
    bad, ops = await sinks(Reply(400)), await sinks(Reply(400))
    rules = "  - {name: hello, on: '**', template: hello, channels: [bad]}"
    h = await harness_factory(config(f"{hook('bad', bad)}\n{hook('ops', ops)}", rules))
    await h.publish(event())
    await until(lambda: counter(h, "failure_notifications", "suppressed") == 1)
    await settled(h)
    letters = await h.transport.dlq_list()
    assert sorted(str(letter.headers[H_RULE]) for letter in letters) == ["hello", "hello:on_failure:bad"]
    assert len(ops.requests) == 1, "the notification is tried once; its failure notifies no one"
    assert counter(h, "failure_notifications", "notified") == 1


async def test_a_channel_notifying_about_itself_does_not_loop(harness_factory: Factory, sinks: Any) -> None:
    bad = await sinks(Reply(400))
    rules = "  - {name: hello, on: '**', template: hello, channels: [bad]}"
    h = await harness_factory(
        config(hook("bad", bad), rules, defaults_on_failure="{template: failed, channels: [bad]}")
    )
    await h.publish(event())
    await until(lambda: counter(h, "failure_notifications", "suppressed") == 1)
    await settled(h)
    assert len(bad.requests) == 2 and len(await h.transport.dlq_list()) == 2


async def test_rule_override_and_false(harness_factory: Factory, sinks: Any) -> None:
    bad, ops, ops2 = await sinks(Reply(400)), await sinks(Reply(204)), await sinks(Reply(204))
    channels = f"{hook('bad', bad)}\n{hook('ops', ops)}\n{hook('ops2', ops2)}"
    rules = (
        "  - {name: own, on: '**', template: hello, channels: [bad],"
        " on_failure: {template: x_failed, channels: [ops2]}}\n"
        "  - {name: quiet, on: '**', template: hello, channels: [bad], on_failure: false}"
    )
    h = await harness_factory(config(channels, rules))
    await h.publish(event())
    [request] = await ops2.wait_for(1)
    assert notification(request)["body"] == "override own"
    await until(lambda: counter(h, "dead_letters", "permanent") == 2)
    await settled(h)
    assert ops.requests == [], "on_failure: false silences the defaults for that rule"
    assert len(ops2.requests) == 1


async def test_redelivered_event_does_not_notify_twice(harness_factory: Factory, sinks: Any) -> None:
    bad, ops = await sinks(Reply(400)), await sinks(Reply(204))
    rules = "  - {name: hello, on: '**', template: hello, channels: [bad]}"
    h = await harness_factory(config(f"{hook('bad', bad)}\n{hook('ops', ops)}", rules))
    await h.publish(event(event_id="same"))
    await ops.wait_for(1)
    await h.publish(event(event_id="same"))  # the broker redelivers (or a producer repeats) the event
    await until(lambda: counter(h, "deliveries", "ops", "skipped") == 1)
    await settled(h)
    assert len(bad.requests) == 2 and len(await h.transport.dlq_list()) == 2
    assert len(ops.requests) == 1


async def test_poison_message_notifies_through_the_defaults(harness_factory: Factory, sinks: Any) -> None:
    ops = await sinks(Reply(204))
    rules = "  - {name: hello, on: '**', template: hello, channels: [ops], on_failure: false}"
    h = await harness_factory(config(hook("ops", ops), rules))
    await h.publish(b"this is not json")
    [request] = await ops.wait_for(1)
    sent = notification(request)
    assert sent["title"] == "FAILED poison"
    assert "rule=None channel=None" in sent["body"] and "event=none name=-" in sent["body"]
    assert sent["meta"]["failure"]["event_id"] is None
    await h.publish(b"this is not json")  # the same poison again: dead-lettered again, notified once
    await until(lambda: counter(h, "dead_letters", "poison") == 2)
    await settled(h)
    assert len(ops.requests) == 1


async def test_without_on_failure_nothing_is_notified(harness_factory: Factory, sinks: Any) -> None:
    bad, ops = await sinks(Reply(400)), await sinks(Reply(204))
    rules = "  - {name: hello, on: '**', template: hello, channels: [bad]}"
    h = await harness_factory(config(f"{hook('bad', bad)}\n{hook('ops', ops)}", rules, defaults_on_failure="null"))
    await h.publish(event())
    await until(lambda: counter(h, "dead_letters", "permanent") == 1)
    await settled(h)
    assert ops.requests == [] and counter(h, "failure_notifications", "notified") == 0


async def test_notification_carries_no_secret(harness_factory: Factory, sinks: Any) -> None:
    token = "T0K3Nabcdef1234567890secret"
    bad, ops = await sinks(Reply(400)), await sinks(Reply(204))
    channels = (
        f"  bad: {{type: webhook, url: '{bad.url}/api/webhooks/123/{token}?key=querysecret99',"
        " headers: {Authorization: 'Bearer headersecret42'}}\n" + hook("ops", ops)
    )
    rules = "  - {name: hello, on: '**', template: hello, channels: [bad]}"
    h = await harness_factory(config(channels, rules))
    await h.publish(event())
    [request] = await ops.wait_for(1)
    assert bad.requests[0].path.endswith(token), "the failing channel really used the token"
    text = request.body.decode() + json.dumps(request.headers)
    for secret in (token, "querysecret99", "headersecret42"):
        assert secret not in text
    assert "HTTP 400" in notification(request)["body"]


def test_on_failure_references_are_checked_at_load(tmp_path: Path) -> None:
    rules = config(
        "  a: {type: console}",
        "  - {name: r, on: x, template: hello, channels: [a], on_failure: {template: nope, channels: [a, zz]}}",
        defaults_on_failure="{template: failed, channels: [missing]}",
    )
    path = write_config(tmp_path, rules, TEMPLATES)
    with pytest.raises(ConfigError) as caught:
        build_runtime(path, registry_for_tests())
    text = str(caught.value)
    assert "defaults.on_failure.channels[0]: unknown channel 'missing'" in text
    assert "rules[0].on_failure.channels[1]: unknown channel 'zz'" in text
    assert "rules[0].on_failure.template: template 'nope' not found" in text


def test_on_failure_true_is_refused_with_what_is_expected(tmp_path: Path) -> None:
    rules = config("  a: {type: console}", "  - {name: r, on: x, template: hello, channels: [a], on_failure: true}")
    path = write_config(tmp_path, rules, TEMPLATES)
    with pytest.raises(ConfigError, match=r"rules\[0\].on_failure: expected a mapping \{template, channels\} or false"):
        build_runtime(path, registry_for_tests())


@pytest.mark.integration
async def test_a_notification_is_retried_through_rabbitmq_like_any_delivery(
    tmp_path: Path, rabbitmq_url: str, sinks: Any
) -> None:
    bad, ops = await sinks(Reply(400)), await sinks(Reply(204))
    ops.reply(Reply(503))  # the ops channel is down for the notification's first attempt
    queue = f"test-failures-{uuid.uuid4().hex[:10]}"
    transport = AmqpTransport(rabbitmq_url, exchange=f"{queue}.events", queue=queue)
    rules = "  - {name: hello, on: '**', template: hello, channels: [bad]}"
    h = await start_harness(
        tmp_path, config(f"{hook('bad', bad)}\n{hook('ops', ops)}", rules), TEMPLATES, transport=transport
    )
    try:
        await h.publish(event(event_id=f"evt-{uuid.uuid4().hex}"), routing_key="user.signed_up")
        first, second = await ops.wait_for(2, timeout=30)
        assert (first.json()["title"], second.json()["title"]) == ("FAILED permanent", "FAILED permanent")
        key = "idempotency-key"
        assert first.headers[key] == second.headers[key], "the retry is the same delivery"
        await until(lambda: counter(h, "deliveries", "ops", "sent") == 1, timeout=30)
        await settled(h)
        assert counter(h, "retries_scheduled", "ops") == 1 and len(bad.requests) == 1
        [letter] = await h.transport.dlq_list()
        assert letter.headers[H_RULE] == "hello"
    finally:
        await h.close()
        cleaner = AmqpTransport(rabbitmq_url, exchange=f"{queue}.events", queue=queue)
        await cleaner.connect()
        await cleaner.delete_topology()
        await cleaner.close()
