"""`router serve --workers 2`: one command, two consumer processes on one RabbitMQ queue, Redis state."""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.http_sink import HttpSink
from tests.polling import until
from tests.serve_support import RouterProcess, amqp_rules, delete_topology, publish_amqp, scrape_metrics, unique_names

pytestmark = pytest.mark.integration

TEMPLATE = "{% block title %}{{ data.n }}{% endblock %}{% block body %}{{ event.id }}{% endblock %}"


def write_config(root: Path, rabbitmq_url: str, redis_url: str, names: dict[str, str], sink: HttpSink) -> None:
    config = amqp_rules(
        rabbitmq_url,
        channels=f"  hook: {{type: webhook, url: '{sink.url}'}}",
        rules="  - {name: every, on: '**', template: note, channels: [hook]}",
        names=names,
    )
    config = config.replace('state: {url: "sqlite:///state.db"}', f'state: {{url: "{redis_url}"}}')
    (root / "templates").mkdir(exist_ok=True)
    (root / "templates" / "note.j2").write_text(TEMPLATE)
    (root / "rules.yaml").write_text(config)


def events(tag: str, count: int, start: int = 0) -> list[tuple[str, bytes]]:
    return [
        ("job.done", json.dumps({"type": "job.done", "id": f"{tag}-{n}", "data": {"n": n}}).encode())
        for n in range(start, start + count)
    ]


def handled(router: RouterProcess, worker: int, *, after: int = 0) -> int:
    """Events worker ``worker`` handled, counting log lines from position ``after``."""
    return sum(r.get("msg") == "event handled" and r.get("worker") == worker for r in router.log_records()[after:])


def lines(router: RouterProcess, msg: str, **fields: Any) -> list[dict[str, Any]]:
    return [r for r in router.log_records() if r.get("msg") == msg and all(r.get(k) == v for k, v in fields.items())]


@pytest.fixture
async def names(rabbitmq_url: str) -> AsyncIterator[dict[str, str]]:
    names = unique_names()
    yield names
    await delete_topology(rabbitmq_url, names)


async def start_workers(root: Path) -> RouterProcess:
    router = RouterProcess(root, args=("--workers", "2"))
    await router.start()
    await router.wait_for_log(lambda r: r.get("msg") == "router started" and r.get("worker") == 1, timeout=30)
    return router


async def test_two_workers_deliver_a_burst_once_both_consume_and_sigterm_loses_nothing(
    tmp_path: Path, rabbitmq_url: str, redis_url: str, names: dict[str, str]
) -> None:
    tag, total = uuid.uuid4().hex[:8], 400
    async with HttpSink() as sink:
        write_config(tmp_path, rabbitmq_url, redis_url, names, sink)
        router = await start_workers(tmp_path)
        try:
            await publish_amqp(rabbitmq_url, names["exchange"], events(tag, total))
            await sink.wait_for(total, timeout=60)
            await until(lambda: handled(router, 0) + handled(router, 1) >= total, "every event handled", timeout=30)
            by_worker = [handled(router, 0), handled(router, 1)]
            assert all(count > 0 for count in by_worker), f"both processes consumed: {by_worker}"
            # One /metrics, each sample labelled with its worker.
            samples = await scrape_metrics(router)
            consumed = {
                dict(labels)["worker"]: value
                for (name, labels), value in samples.items()
                if name == "router_events_received_total" and dict(labels).get("kind") == "event"
            }
            assert set(consumed) == {"0", "1"}, consumed
            assert consumed["0"] == by_worker[0] and consumed["1"] == by_worker[1]
            assert samples[("router_workers_running", ())] == 2
            # More while stopping: SIGTERM lets each process finish what it took; the rest waits in the queue.
            await publish_amqp(rabbitmq_url, names["exchange"], events(tag, 200, start=total))
            router.signal(signal.SIGTERM)
            assert await router.wait_exit(60) == 0
            assert len(lines(router, "router stopped")) == 2, router.logs()[-3000:]
        finally:
            await router.stop()
        # Whatever was not delivered before the stop is delivered by the next start, once.
        router = await start_workers(tmp_path)
        try:
            await sink.wait_for(total + 200, timeout=60)
        finally:
            await router.stop()
        delivered = Counter(r.json()["body"] for r in sink.requests)
        assert set(delivered) == {f"{tag}-{n}" for n in range(total + 200)}
        assert max(delivered.values()) == 1, "an event was delivered twice"


async def test_sighup_reloads_every_worker(
    tmp_path: Path, rabbitmq_url: str, redis_url: str, names: dict[str, str]
) -> None:
    tag = uuid.uuid4().hex[:8]
    async with HttpSink() as sink:
        write_config(tmp_path, rabbitmq_url, redis_url, names, sink)
        router = await start_workers(tmp_path)
        try:
            (tmp_path / "templates" / "note.j2").write_text(TEMPLATE.replace("{{ data.n }}", "new {{ data.n }}"))
            router.signal(signal.SIGHUP)
            for worker in (0, 1):
                await router.wait_for_log(
                    lambda r, w=worker: r.get("msg") == "configuration reloaded" and r.get("worker") == w
                )
            mark = len(router.log_records())
            await publish_amqp(rabbitmq_url, names["exchange"], events(tag, 200))
            await sink.wait_for(200, timeout=60)
            await until(lambda: handled(router, 0, after=mark) + handled(router, 1, after=mark) >= 200, "all handled")
            assert handled(router, 0, after=mark) > 0 and handled(router, 1, after=mark) > 0
            titles = {r.json()["title"] for r in sink.requests}
            assert all(title.startswith("new ") for title in titles), sorted(titles)[:5]
        finally:
            await router.stop()


async def test_a_killed_worker_is_restarted_and_consumes_again(
    tmp_path: Path, rabbitmq_url: str, redis_url: str, names: dict[str, str]
) -> None:
    tag = uuid.uuid4().hex[:8]
    async with HttpSink() as sink:
        write_config(tmp_path, rabbitmq_url, redis_url, names, sink)
        router = await start_workers(tmp_path)
        try:
            first = lines(router, "worker started", child=1)[0]["pid"]
            os.kill(first, signal.SIGKILL)
            await router.wait_for_log(lambda r: r.get("msg") == "worker exited unexpectedly; restarting in 1 s")
            await until(
                lambda: len(lines(router, "router started", worker=1)) == 2, "worker 1 started again", timeout=30
            )
            assert lines(router, "worker started", child=1)[-1]["pid"] != first
            mark = len(router.log_records())
            await publish_amqp(rabbitmq_url, names["exchange"], events(tag, 200))
            await sink.wait_for(200, timeout=60)
            await until(lambda: handled(router, 0, after=mark) + handled(router, 1, after=mark) >= 200, "all handled")
            assert handled(router, 1, after=mark) > 0, "the restarted worker consumes"
            samples = await scrape_metrics(router)
            assert samples[("router_worker_restarts_total", ())] == 1
        finally:
            await router.stop()
        assert router.proc is not None and router.proc.returncode == 0


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda text: text.replace("template: note", "template: missing"), "missing"),
        (lambda text: text.replace('url: "amqp', 'url: "" #'), "needs RabbitMQ"),
        (lambda text: text.replace('state: {url: "redis', 'state: {url: "sqlite:///state.db"} #'), "Redis state"),
    ],
    ids=["invalid-rules", "embedded-queue", "sqlite-state"],
)
async def test_a_refused_configuration_starts_no_worker(
    tmp_path: Path, rabbitmq_url: str, redis_url: str, names: dict[str, str], change: Any, expected: str
) -> None:
    async with HttpSink() as sink:
        write_config(tmp_path, rabbitmq_url, redis_url, names, sink)
    rules = tmp_path / "rules.yaml"
    rules.write_text(change(rules.read_text()))
    router = RouterProcess(tmp_path, args=("--workers", "2"))
    with pytest.raises(AssertionError, match="exited with 2"):
        await router.start()
    assert expected in router.logs()
    assert not lines(router, "worker started")
