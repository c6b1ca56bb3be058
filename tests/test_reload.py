"""Hot reload under load: a valid change is applied, an invalid one is refused with its
location while the old configuration keeps delivering, and no event is lost or doubled.

A publisher keeps posting events to `router serve` (a subprocess on the embedded queue) while
the test edits a template (reloaded by the file watcher), breaks rules.yaml (refused by the
watcher) and sends SIGHUP (refused again). Deliveries are observed at a local HTTP sink.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.fakes.http_sink import HttpSink
from tests.polling import until
from tests.serve_support import RouterProcess, Samples, scrape_metrics

RULES = """\
version: 1
state: {{url: "sqlite:///state.db"}}
channels:
  hook:
    type: webhook
    url: "{url}"
    concurrency: 16
rules:
  - name: note
    on: "**"
    template: note
    channels: [hook]
"""
TEMPLATE = "{{% block title %}}{version}{{% endblock %}}{{% block body %}}{{{{ data.n }}}}{{% endblock %}}"


class Publisher:
    """Posts small batches of events as fast as the router takes them, until stopped."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.accepted: list[str] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Publisher:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task  # raises if a POST was refused

    async def _run(self) -> None:
        n = 0
        async with aiohttp.ClientSession() as session:
            while not self._stop.is_set():
                batch = [{"type": "planet.completed", "id": f"evt-{n + i}", "data": {"n": n + i}} for i in range(5)]
                n += len(batch)
                async with session.post(f"{self.url}/events", json=batch) as response:
                    body = await response.json()
                    assert response.status == 202, body
                    self.accepted.extend(body["ids"])
                await asyncio.sleep(0.01)  # about 300 events a second: load, not a flood


def reloads(samples: Samples, result: str) -> float:
    return samples.get(("router_config_reloads_total", (("result", result),)), 0.0)


def failed_reloads(router: RouterProcess) -> list[dict[str, Any]]:
    return [r for r in router.log_records() if r.get("msg", "").startswith("reload failed")]


@pytest.fixture
async def router_factory() -> AsyncIterator[list[RouterProcess]]:
    started: list[RouterProcess] = []
    yield started
    for router in started:
        await router.stop()


async def test_valid_and_invalid_reloads_under_load_lose_nothing(
    tmp_path: Path, router_factory: list[RouterProcess]
) -> None:
    async with HttpSink() as hook:
        (tmp_path / "templates").mkdir()
        template = tmp_path / "templates" / "note.j2"
        template.write_text(TEMPLATE.format(version="v1"))
        rules = tmp_path / "rules.yaml"
        rules.write_text(RULES.format(url=hook.url))
        router = await RouterProcess(tmp_path).start()
        router_factory.append(router)

        async with Publisher(router.url) as publisher:
            await hook.wait_for(20)
            assert {r.json()["title"] for r in hook.requests} == {"v1"}

            # 1. A valid change to a template: the file watcher applies it.
            template.write_text(TEMPLATE.format(version="v2"))
            await until(lambda: asyncio.sleep(0, hook.requests[-1].json()["title"] == "v2"), "the new template")
            reloaded = await router.wait_for_log(lambda r: r.get("msg") == "configuration reloaded")
            assert reloaded["trigger"] == "file change"

            # 2. An unknown key in rules.yaml: refused, with where it is; the old config stays.
            rules.write_text(
                RULES.format(url=hook.url).replace("    template: note\n", "    template: note\n    colour: blue\n")
            )
            bad_line = rules.read_text().splitlines().index("    colour: blue") + 1
            [failed] = await until_failures(router, 1)
            assert failed["trigger"] == "file change"
            assert f"rules.yaml:{bad_line}:5: rules[0].colour: unknown key" in "\n".join(failed["problems"])
            assert f"rules.yaml:{bad_line}:5" in failed["msg"], "the text log line names the place too"
            samples = await scrape_metrics(router)
            assert samples[("router_config_last_reload_successful", ())] == 0

            # 3. SIGHUP with the file still broken: refused again.
            router.signal(signal.SIGHUP)
            failures = await until_failures(router, 2)
            assert failures[1]["trigger"] == "SIGHUP"

            # Still delivering, on the last good configuration.
            seen = len(hook.requests)
            await hook.wait_for(seen + 20)
            assert {r.json()["title"] for r in hook.requests[seen:]} == {"v2"}
            async with aiohttp.ClientSession() as session, session.get(f"{router.url}/readyz") as response:
                assert response.status == 200

        samples = await scrape_metrics(router)
        assert reloads(samples, "success") >= 1
        assert reloads(samples, "failure") >= 2
        assert samples[("router_config_last_reload_successful", ())] == 0

        # Every accepted event delivered, exactly once.
        accepted = publisher.accepted
        assert len(accepted) > 100, "the reloads happened under load"
        await hook.wait_for(len(accepted), timeout=30)

        async def drained() -> bool:
            samples = await scrape_metrics(router)
            return (
                samples.get(("router_events_received_total", (("kind", "event"),)), 0) == len(accepted)
                and samples[("router_events_in_flight", ())] == 0
            )

        await until(drained, "the router to finish every event")
        delivered = [r.json()["meta"]["event_id"] for r in hook.requests]
        assert sorted(delivered) == sorted(accepted)
        assert len(delivered) == len(set(delivered)), "no event delivered twice"

        # Fixing the file brings the gauge back.
        rules.write_text(RULES.format(url=hook.url))
        router.signal(signal.SIGHUP)

        async def recovered() -> bool:
            return (await scrape_metrics(router))[("router_config_last_reload_successful", ())] == 1

        await until(recovered, "the fixed configuration to load")


async def until_failures(router: RouterProcess, count: int) -> list[dict[str, Any]]:
    await until(lambda: asyncio.sleep(0, len(failed_reloads(router)) >= count), f"{count} failed reload(s)")
    return failed_reloads(router)[:count]
