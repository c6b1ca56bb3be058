"""The activity store fails; deliveries do not (docs/activity.md, "Storage").

A private PostgreSQL holds the history of a `router serve`; it is stopped mid-run: every event
is still delivered, the dropped-history counter moves (logged once), and once PostgreSQL is back
the history resumes. A full buffer drops and counts the same way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from router.activity.recorder import Recorder
from router.activity.sqlite_store import SqliteActivityStore
from router.activity.store import Filter
from router.support.metrics import Metrics
from tests.builders import make_event
from tests.fakes.http_sink import HttpSink
from tests.polling import until
from tests.postgres_support import PrivatePostgres, postgres_bin
from tests.serve_support import RouterProcess, scrape_metrics
from tests.test_serve_embedded import embedded_rules, post_events, setup_project, total


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    if postgres_bin() is None:
        pytest.skip("PostgreSQL server binaries are not installed")
    server = PrivatePostgres().init()
    server.start()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
async def routers() -> AsyncIterator[list[RouterProcess]]:
    started: list[RouterProcess] = []
    yield started
    for router in started:
        await router.stop()


async def listed_ids(router: RouterProcess) -> set[str] | None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{router.url}/api/activity?since=1h&limit=500") as response,
    ):
        if response.status != 200:
            return None
        return {e["event_id"] for e in (await response.json())["events"]}


def batch(prefix: str, n: int = 20) -> list[dict[str, object]]:
    return [{"type": "order.paid", "id": f"{prefix}-{i}", "data": {"n": i}} for i in range(n)]


@pytest.mark.integration
async def test_postgres_stopped_mid_run_loses_history_not_deliveries(
    tmp_path: Path, private_postgres: PrivatePostgres, routers: list[RouterProcess]
) -> None:
    async with HttpSink() as hook:
        setup_project(
            tmp_path,
            embedded_rules(
                f"  hook: {{type: webhook, url: '{hook.url}'}}",
                "  - {name: paid, on: 'order.*', template: note, channels: [hook]}",
            )
            + f'activity: {{url: "{private_postgres.url}"}}\n',
        )
        router = await RouterProcess(tmp_path).start()
        routers.append(router)

        await post_events(router, batch("before"))
        await hook.wait_for(20, timeout=60)

        async def first_listed() -> bool:
            return {f"before-{i}" for i in range(20)} <= (await listed_ids(router) or set())

        await until(first_listed, "the first batch in the history")

        private_postgres.stop()
        await post_events(router, batch("during"))
        await hook.wait_for(40, timeout=60)  # every delivery goes on

        async def dropped() -> bool:
            return total(await scrape_metrics(router), "router_activity_dropped_total") > 0

        await until(dropped, "router_activity_dropped_total to move")
        assert router.logs().count("activity store unavailable") == 1, router.logs()[-3000:]

        private_postgres.start()
        await post_events(router, batch("after"))
        await hook.wait_for(60, timeout=60)

        async def resumed() -> bool:
            return {f"after-{i}" for i in range(20)} <= (await listed_ids(router) or set())

        await until(resumed, "the history to resume")
        assert "activity store is writable again" in router.logs()
        delivered = [r.json()["meta"]["event_id"] for r in hook.requests]
        assert sorted(delivered) == sorted(f"{p}-{i}" for p in ("before", "during", "after") for i in range(20))


async def test_a_full_buffer_drops_and_counts_without_waiting(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    store = SqliteActivityStore(tmp_path / "activity.db")
    recorder = Recorder(store, metrics=metrics, transport="embedded", capacity=100, interval=60)
    await recorder.start()
    try:
        for n in range(150):
            recorder.event(make_event(type="t.x", id=f"e{n}", source="s", time=datetime.now(UTC)), 10, "none")
        assert metrics.activity_dropped.get() == 50
        assert caplog.text.count("activity buffer full") == 1
        await recorder.flush()
        assert metrics.activity_written.get() == 100
        assert store.list_events(Filter(limit=1))["counts"]["skipped"] == 100
    finally:
        await recorder.close()
