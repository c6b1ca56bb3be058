"""Backpressure at ingest against a real `router serve` (issue 15, item 13).

With the consumer held up (a webhook that does not answer, prefetch 1), POST /events fills
the embedded queue up to ``ingest.max_queued_events`` and then answers 503 with Retry-After;
once the webhook answers again the queue drains, POST /events is accepted again, every
accepted event is delivered, and queue.db gives the space of the drained rows back.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import aiohttp

from router.config.models import RouterConfig
from router.ingest.auth import IngestGuard, IngestSettings
from tests.fakes.http_sink import HttpSink, Reply
from tests.serve_support import RouterProcess

BOUND = 40
DOCUMENTED_QUEUED_EVENTS = 100_000  # README.md, docs/configuration.md, docs/guarantees.md
ROOT = Path(__file__).resolve().parent.parent
PADDING = "p" * 200_000  # ~200 KB per event: the queue file grows to several megabytes


def test_the_default_bound_on_queued_events_is_the_documented_one() -> None:
    config = RouterConfig.model_validate({"version": 1})  # no ingest: section
    assert config.ingest.max_queued_events == DOCUMENTED_QUEUED_EVENTS
    # What POST /events enforces under that configuration, and the settings' own fallback.
    assert IngestGuard(lambda: config, max_event_bytes=1024).settings().max_queued_events == DOCUMENTED_QUEUED_EVENTS
    assert IngestSettings(auth=None, max_request_bytes=1).max_queued_events == DOCUMENTED_QUEUED_EVENTS


def test_the_docs_state_the_default_bound_on_queued_events() -> None:
    def number(text: str) -> int:
        return int(text.replace(",", ""))

    default = RouterConfig.model_validate({"version": 1}).ingest.max_queued_events
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    reference = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    guarantees = (ROOT / "docs" / "guarantees.md").read_text(encoding="utf-8")
    stated = {
        "README.md": re.findall(r"`max_queued_events` \[([\d,]+)\]", readme),
        "docs/configuration.md": re.findall(r"^\| `max_queued_events` \|[^|]*\| `([\d,]+)` \|", reference, re.M),
        "docs/guarantees.md": re.findall(r"`ingest\.max_queued_events` \(([\d,]+)\)", guarantees),
    }
    assert all(stated.values()), f"a page no longer states the default: {stated}"
    assert {page: [number(n) for n in found] for page, found in stated.items()} == {
        page: [default] * len(found) for page, found in stated.items()
    }


def project(root: Path, sink_url: str) -> None:
    (root / "rules.yaml").write_text(
        "version: 1\n"
        "broker: {prefetch: 1}\n"
        f"ingest: {{max_queued_events: {BOUND}}}\n"
        "channels:\n"
        f"  hook: {{type: webhook, url: '{sink_url}/hook', timeout: 60s}}\n"
        "rules:\n"
        "  - {name: r, on: fill.up, channels: [hook], template: t}\n"
    )
    (root / "templates").mkdir(exist_ok=True)
    (root / "templates" / "t.j2").write_text("{% block body %}{{ data.n }}{% endblock %}")


def sizes(root: Path) -> str:
    import sqlite3

    files = {p.name: p.stat().st_size for p in (root / ".router").glob("queue.db*")}
    conn = sqlite3.connect(root / ".router" / "queue.db")
    try:
        pragmas = {
            p: conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("auto_vacuum", "freelist_count", "page_count")
        }
        counts = {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("events", "retries", "dead_letters")
        }
    finally:
        conn.close()
    return f"{files} {pragmas} {counts}"


def queue_bytes(root: Path) -> int:
    """The queue file and its WAL."""
    return sum(p.stat().st_size for p in (root / ".router").glob("queue.db*"))


def main_file(root: Path) -> int:
    return (root / ".router" / "queue.db").stat().st_size


async def post(session: aiohttp.ClientSession, url: str, n: int) -> tuple[int, str | None]:
    event = {"type": "fill.up", "id": f"e-{n}", "data": {"n": n, "pad": PADDING}}
    async with session.post(f"{url}/events", json=event) as response:
        return response.status, response.headers.get("Retry-After")


async def test_a_full_queue_answers_503_then_drains_accepts_again_and_shrinks(tmp_path: Path) -> None:
    async with HttpSink(Reply(hang=True)) as sink:
        project(tmp_path, sink.url)
        router = await RouterProcess(tmp_path, args=("--no-watch",)).start()
        try:
            accepted: list[int] = []
            async with aiohttp.ClientSession() as session:
                refused = None
                for n in range(BOUND * 3):  # bounded: the bound plus the estimate's slack, at most
                    status, retry_after = await post(session, router.url, n)
                    if status == 503:
                        refused = retry_after
                        break
                    assert status == 202
                    accepted.append(n)
                assert refused == "1", "never refused with Retry-After"
                # The estimate refreshes every 0.1 s and errs on the side of refusing.
                assert BOUND - 2 <= len(accepted) <= BOUND + 1, len(accepted)
                peak = main_file(tmp_path)

                # Let the webhook answer: the queue drains.
                sink.default = Reply()
                assert sink._release is not None
                sink._release.set()
                deadline = time.monotonic() + 120  # generous: the machine may be busy
                while len({r.headers.get("idempotency-key") for r in sink.requests}) < len(accepted):
                    assert time.monotonic() < deadline, f"{len(sink.requests)} of {len(accepted)} delivered"
                    peak = max(peak, main_file(tmp_path))
                    await asyncio.sleep(0.1)
                while (status := (await post(session, router.url, 10_000))[0]) == 503:
                    assert time.monotonic() < deadline, "still refused after the queue drained"
                    await asyncio.sleep(0.1)
                assert status == 202
                # The drained rows' space goes back to the file system (the WAL is cut back too).
                assert peak > 4_000_000, peak
                while main_file(tmp_path) > peak / 4 or queue_bytes(tmp_path) > peak:
                    assert time.monotonic() < deadline, f"queue files still {sizes(tmp_path)} (peak: {peak})"
                    await asyncio.sleep(0.2)
                print(f"queue.db: {peak} bytes at its peak, {main_file(tmp_path)} drained ({sizes(tmp_path)})")
        finally:
            await router.stop()
