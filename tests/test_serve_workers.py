"""`router serve --workers 2`: one command, two consumer processes on one RabbitMQ queue, Redis state."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.builders import event_bytes
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
    return [("job.done", event_bytes("job.done", f"{tag}-{n}", {"n": n})) for n in range(start, start + count)]


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


async def start_workers(root: Path, *, watch: bool = False, backoff: float | None = None) -> RouterProcess:
    env = {**os.environ, **({"ROUTER_WORKER_BACKOFF": str(backoff)} if backoff is not None else {})}
    router = RouterProcess(root, args=("--workers", "2", *(() if watch else ("--no-watch",))), env=env)
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


async def reloaded_everywhere(router: RouterProcess, times: int) -> None:
    for worker in (0, 1):
        await until(
            lambda w=worker: len(lines(router, "configuration reloaded", worker=w)) == times,
            f"worker {worker} reloaded {times} time(s)",
            timeout=30,
        )


async def test_sighup_and_a_file_change_reload_every_worker(
    tmp_path: Path, rabbitmq_url: str, redis_url: str, names: dict[str, str]
) -> None:
    tag = uuid.uuid4().hex[:8]
    template = tmp_path / "templates" / "note.j2"
    async with HttpSink() as sink:
        write_config(tmp_path, rabbitmq_url, redis_url, names, sink)
        router = await start_workers(tmp_path, watch=True)
        try:
            for number, (prefix, trigger) in enumerate((("new", "SIGHUP"), ("newer", "file")), start=1):
                template.write_text(TEMPLATE.replace("{{ data.n }}", f"{prefix} {{{{ data.n }}}}"))
                if trigger == "SIGHUP":
                    router.signal(signal.SIGHUP)
                # else: the parent sees the change, reloads, and tells the children (they watch nothing)
                await reloaded_everywhere(router, number)
                mark, sent = len(router.log_records()), len(sink.requests)
                await publish_amqp(rabbitmq_url, names["exchange"], events(f"{tag}{number}", 200))
                await sink.wait_for(sent + 200, timeout=60)
                await until(
                    lambda m=mark: handled(router, 0, after=m) + handled(router, 1, after=m) >= 200, "all handled"
                )
                assert handled(router, 0, after=mark) > 0 and handled(router, 1, after=mark) > 0
                titles = {r.json()["title"].split()[0] for r in sink.requests[sent:]}
                assert titles == {prefix}, f"{trigger}: {titles}"
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
            assert os.getpgid(first) == first, "a child has its own process group: Ctrl-C reaches the parent only"
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
            router.signal(signal.SIGINT)  # as Ctrl-C: forwarded once, a graceful stop of both
            assert await router.wait_exit(60) == 0
            assert len(lines(router, "router stopped")) == 2
        finally:
            await router.stop()


async def test_a_worker_that_keeps_failing_stops_the_router_with_an_error(
    tmp_path: Path, rabbitmq_url: str, redis_url: str, names: dict[str, str]
) -> None:
    async with HttpSink() as sink:
        write_config(tmp_path, rabbitmq_url, redis_url, names, sink)
        router = await start_workers(tmp_path, backoff=0.05)  # restarts after 0.05, 0.1, 0.2, 0.4 s
        try:
            # rules.yaml broken after the start (the parent does not watch it here): a restarted
            # child reads it, refuses it and exits 2, again and again.
            rules = tmp_path / "rules.yaml"
            rules.write_text(rules.read_text().replace("template: note", "template: missing"))
            os.kill(lines(router, "worker started", child=1)[0]["pid"], signal.SIGKILL)
            assert await router.wait_exit(90) == 1
            assert "error: stopped: worker 1 exited 5 times in a row (last exit code 2)" in router.logs()
            assert len(lines(router, "worker started", child=1)) == 5
            assert len(lines(router, "router stopped", worker=0)) == 1
        finally:
            await router.stop()


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
    router = RouterProcess(tmp_path, env={**os.environ, "ROUTER_WORKERS": "2"})  # the variable, as the flag
    with pytest.raises(AssertionError, match="exited with 2"):
        await router.start()
    assert expected in router.logs()
    assert not lines(router, "worker started")


async def test_children_stop_when_the_parent_is_killed(
    tmp_path: Path, rabbitmq_url: str, redis_url: str, names: dict[str, str]
) -> None:
    async with HttpSink() as sink:
        write_config(tmp_path, rabbitmq_url, redis_url, names, sink)
        router = await start_workers(tmp_path)
        child = lines(router, "worker started", child=1)[0]["pid"]
        assert router.proc is not None
        router.proc.kill()
        router.proc.wait()
        await router.wait_for_log(lambda r: r.get("msg") == "the parent process is gone; stopping")
        await router.wait_for_log(lambda r: r.get("msg") == "router stopped" and r.get("worker") == 1, timeout=60)

        def gone() -> bool:  # exited: no such process, or a zombie nobody has reaped yet
            try:
                return Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
            except FileNotFoundError:
                return True

        await until(gone, "the orphaned child to exit", timeout=30)


async def test_the_broker_url_of_the_command_line_reaches_the_children_outside_their_command_line(
    tmp_path: Path, rabbitmq_url: str, redis_url: str, names: dict[str, str]
) -> None:
    """`--broker` wins over rules.yaml in every process, and its password is not shown to `ps`."""
    async with HttpSink() as sink:
        write_config(tmp_path, rabbitmq_url, redis_url, names, sink)
        rules = tmp_path / "rules.yaml"
        rules.write_text(rules.read_text().replace(rabbitmq_url, "amqp://nobody:wrong@127.0.0.1:1/"))
        router = RouterProcess(tmp_path, args=("--workers", "2", "--no-watch", "--broker", rabbitmq_url))
        await router.start()
        try:
            await router.wait_for_log(lambda r: r.get("msg") == "router started" and r.get("worker") == 1, timeout=30)
            child = lines(router, "worker started", child=1)[0]["pid"]
            command_line = Path(f"/proc/{child}/cmdline").read_bytes().decode()
            assert "--worker-index" in command_line and rabbitmq_url not in command_line
            assert "--broker" not in command_line
        finally:
            await router.stop()


def test_workers_auto_is_one_per_usable_core_and_nonsense_is_refused() -> None:
    from router.app.workers import parse_workers

    assert parse_workers("auto") == len(os.sched_getaffinity(0))
    assert parse_workers("3") == 3
    for bad in ("0", "-1", "two"):
        with pytest.raises(ValueError, match=bad):
            parse_workers(bad)


async def test_a_shutdown_step_that_never_ends_is_left_behind_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """README: each closing step gets a bounded time; one that overruns is named and skipped,
    so shutdown finishes (an orphaned child once waited past the 60 s the test allows)."""
    from router.app.server import bounded

    never = asyncio.get_running_loop().create_future()
    with caplog.at_level("WARNING", logger="router.serve"):
        await asyncio.wait_for(bounded("close the state store", never, timeout=0.2), timeout=10)
        await bounded("close the engine", asyncio.sleep(0), timeout=0.2)
    assert never.cancelled(), "the step that overran was not cancelled"
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == ["shutting down: close the state store took over 0.2s; going on without it"]
