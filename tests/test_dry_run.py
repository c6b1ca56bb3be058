"""Dry run: every delivery is rendered and logged, nothing is sent, and events are still acknowledged.

In process on the embedded queue and SQLite state (both real), and as `router serve --dry-run`
fed over HTTP. Channels are webhooks posting to a local HTTP sink, which must receive nothing.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from router.runtime.runtime import build_runtime
from tests.builders import event_bytes
from tests.engine_support import Harness, start_harness, until, write_config
from tests.engine_support import test_registry as registry_for_tests
from tests.fakes.http_sink import HttpSink, Reply
from tests.serve_support import RouterProcess, scrape_metrics

TEMPLATES = {
    "hello.j2": "{% block title %}Hi {{ data.name }}{% endblock %}{% block body %}{{ data.name }} did it{% endblock %}",
}


def config(sink: HttpSink, *, dry_run: bool, extra: str = "") -> str:
    return f"""
version: 1
state: {{url: "sqlite:///state.db"}}
dry_run: {str(dry_run).lower()}
channels:
  hook: {{type: webhook, url: "{sink.url}/hook"}}
rules:
  - {{name: hello, on: "user.**", template: hello, channels: [hook]{extra}}}
"""


def event(name: str = "Ada", event_id: str = "evt-1") -> bytes:
    return event_bytes("user.signed_up", event_id, {"name": name})


@pytest.fixture
async def sink() -> AsyncIterator[HttpSink]:
    async with HttpSink(Reply(204)) as started:
        yield started


@pytest.fixture
async def harness(tmp_path: Path, sink: HttpSink) -> AsyncIterator[Harness]:
    h = await start_harness(tmp_path, config(sink, dry_run=True), TEMPLATES)
    yield h
    await h.close()


def dry_run_records(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [r.fields for r in caplog.records if r.name == "router.dry_run"]  # type: ignore[attr-defined]


def events_left(root: Path) -> int:
    with sqlite3.connect(root / "queue.db") as db:
        return int(db.execute("SELECT COUNT(*) FROM events").fetchone()[0])


async def test_dry_run_logs_each_delivery_sends_nothing_and_acknowledges(
    harness: Harness, sink: HttpSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="router.dry_run")
    h = harness
    await h.publish(event("Ada", "evt-1"))
    await h.publish(event("x" * 1000, "evt-2"))
    await until(lambda: h.metrics.deliveries.labels("hook", "dry_run")._value.get() == 2)
    await until(lambda: events_left(h.root) == 0)  # both acknowledged: gone from the queue
    records = sorted(dry_run_records(caplog), key=lambda f: str(f["event_id"]))
    assert [(f["event_id"], f["rule"], f["channel"]) for f in records] == [
        ("evt-1", "hello", "hook"),
        ("evt-2", "hello", "hook"),
    ]
    assert records[0]["title"] == "Hi Ada" and records[0]["body"] == "Ada did it"
    assert len(str(records[1]["body"])) == 200 and str(records[1]["body"]).endswith("…"), "long bodies are cut"
    assert sink.requests == []
    assert h.metrics.events_requeued._value.get() == 0
    assert h.metrics.dry_run._value.get() == 1


async def test_turning_dry_run_off_sends_what_dry_run_only_logged(harness: Harness, sink: HttpSink) -> None:
    h = harness
    await h.publish(event(event_id="same"))
    await until(lambda: h.metrics.deliveries.labels("hook", "dry_run")._value.get() == 1)
    path = write_config(h.root, config(sink, dry_run=False), TEMPLATES)
    await h.engine.swap(build_runtime(path, registry_for_tests()))
    assert h.metrics.dry_run._value.get() == 0
    await h.publish(event(event_id="same"))  # the same event again: dry run did not record it as sent
    [request] = await sink.wait_for(1)
    assert request.json()["body"] == "Ada did it"


async def test_rule_flow_control_still_applies_in_dry_run(
    tmp_path: Path, sink: HttpSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="router.dry_run")
    dedupe = ", dedupe: {key: '{{ data.name }}', window: 1h}"
    h = await start_harness(tmp_path, config(sink, dry_run=True, extra=dedupe), TEMPLATES)
    try:
        await h.publish(event("Ada", "evt-1"))
        await h.publish(event("Ada", "evt-2"))  # a duplicate by the dedupe key
        await until(lambda: h.metrics.flow.labels("hello", "skipped")._value.get() == 1)
        await until(lambda: events_left(tmp_path) == 0)
        assert [f["event_id"] for f in dry_run_records(caplog)] == ["evt-1"]
        assert sink.requests == []
    finally:
        await h.close()


SECRET = "Bearer-s3cr3t-token-0123456789"


async def test_router_serve_dry_run_on_the_embedded_queue(tmp_path: Path, sink: HttpSink) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "hello.j2").write_text(
        "{% block title %}Hi {{ data.name }}{% endblock %}"
        "{% block body %}Profile: https://platform.example.com/u/{{ data.name }}?tab=progress {{ data.note }}"
        "{% endblock %}"
    )
    rules = config(sink, dry_run=False).replace(  # the flag turns dry run on
        f'url: "{sink.url}/hook"', f'url: "{sink.url}/hook", headers: {{Authorization: "{SECRET}"}}'
    )
    (tmp_path / "rules.yaml").write_text(rules)
    router = RouterProcess(tmp_path, args=("--dry-run",))
    await router.start()
    try:
        warning = await router.wait_for_log(lambda r: r.get("msg", "").startswith("dry run: nothing will be sent"))
        assert warning["level"] == "warning"
        async with aiohttp.ClientSession() as session:
            # An event quoting the channel's secret: the logged preview masks it (and keeps the link).
            data = {"name": "user{i}", "note": f"leaked {SECRET}"}
            body = [
                {"type": "user.signed_up", "id": f"evt-{i}", "data": {**data, "name": f"user{i}"}} for i in range(3)
            ]
            async with session.post(f"{router.url}/events", json=body) as response:
                assert response.status == 202
        for i in range(3):
            line = await router.wait_for_log(
                lambda r, i=i: r.get("logger") == "router.dry_run" and r.get("event_id") == f"evt-{i}"
            )
            assert line["rule"] == "hello" and line["channel"] == "hook" and line["title"] == f"Hi user{i}"
            # The message's own link is shown whole; the registered secret is not shown at all.
            assert f"https://platform.example.com/u/user{i}?tab=progress" in line["body"]
            assert SECRET not in json.dumps(line)
        metrics = await scrape_metrics(router)
        assert metrics[("router_deliveries_total", (("channel", "hook"), ("outcome", "dry_run")))] == 3
        assert metrics[("router_dry_run", ())] == 1
        assert sink.requests == []
    finally:
        await router.stop()
    assert sink.requests == []


def test_serve_help_documents_dry_run() -> None:
    from click.testing import CliRunner

    from router.cli import cli

    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0
    assert "--dry-run" in result.output and "instead of sending it" in " ".join(result.output.split())


async def test_a_rich_payload_is_logged_when_the_message_has_one(caplog: pytest.LogCaptureFixture) -> None:
    from types import SimpleNamespace
    from typing import Any

    from router.core.delivery import Delivery
    from router.core.events import decode
    from router.pipeline.dryrun import DryRun

    caplog.set_level(logging.INFO, logger="router.dry_run")
    # Stands in for a Message with a channel's rich payload (e.g. Discord embeds).
    message: Any = SimpleNamespace(title="t", body="b", meta={}, payload={"embeds": [{"title": "T"}]})
    outcome = await DryRun()(Delivery(decode(event()), "hello", "hook", "discord", message))
    assert outcome.status == "skipped"
    [fields] = dry_run_records(caplog)
    assert json.loads(str(fields["payload"])) == {"embeds": [{"title": "T"}]}
