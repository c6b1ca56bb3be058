"""The embedded queue and the state store on a full disk, against a real `router serve`: ingest
answers 503, consumption backs off (one log line per condition per interval, not hundreds a
second), and once space is back every event is delivered.

The disk is a private tmpfs of 2 MiB mounted for the test (root only; skipped otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.fakes.http_sink import HttpSink, Reply
from tests.serve_support import RouterProcess
from tests.test_serve_embedded import post_events, setup_project

EVENTS = 12
QUIET_WINDOW = 4.0  # seconds of a full disk over which log lines are counted


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a private tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(disk)], capture_output=True, timeout=10
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=10)


def fill(disk: Path) -> Path:
    """Take every free byte of ``disk``; returns the filler file (delete it to free the space)."""
    filler = disk / "filler"
    with open(filler, "wb") as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 16384)
            out.flush()
    return filler


async def test_a_full_disk_backs_off_quietly_refuses_ingest_and_recovers_without_loss(
    tmp_path: Path, small_disk: Path
) -> None:
    async with HttpSink(default=Reply(503, hang=True)) as hook:
        setup_project(
            tmp_path,
            f"""
version: 1
broker: {{embedded_path: "{small_disk}/queue.db", prefetch: 4}}
state: {{url: "sqlite:///{small_disk}/state.db"}}
channels:
  hook: {{type: webhook, url: '{hook.url}', timeout: 60s}}
rules:
  - {{name: note, on: '**', template: note, channels: [hook]}}
""",
        )
        router = await RouterProcess(tmp_path).start()
        try:
            posted = await post_events(
                router, [{"type": "planet.completed", "id": f"evt-{n}", "data": {"n": n}} for n in range(EVENTS)]
            )
            await hook.wait_for(4)  # four sends held open by the receiver, the rest queued
            filler = fill(small_disk)

            # Ingest refuses what it cannot store.
            async with (
                aiohttp.ClientSession() as session,
                session.post(f"{router.url}/events", json={"type": "planet.completed", "data": {"n": -1}}) as response,
            ):
                assert response.status == 503

            # The receiver answers 503: scheduling the retries fails, and keeps failing while the disk is full.
            hook.default = Reply(503)
            assert hook._release is not None
            hook._release.set()
            started = time.monotonic()
            lines_before = len(router.logs().splitlines())
            while time.monotonic() - started < QUIET_WINDOW:
                await asyncio.sleep(0.1)
            lines = router.logs().splitlines()[lines_before:]
            requeue_lines = [line for line in lines if "could not resolve message" in line]
            assert 1 <= len(requeue_lines) <= 3, f"{len(requeue_lines)} requeue lines in {QUIET_WINDOW}s"
            assert len(hook.requests) < 4 + 2 * QUIET_WINDOW + 8, "the receiver was hammered while the disk was full"
            assert len(lines) < 40, f"{len(lines)} log lines in {QUIET_WINDOW}s on a full disk:\n" + "\n".join(
                lines[:20]
            )

            # Space is back: every event is delivered, nothing lost.
            filler.unlink()
            hook.default = Reply(204)
            attempts_while_full = len(hook.requests)
            deadline = time.monotonic() + 30
            while {r.json()["meta"]["event_id"] for r in hook.requests} != set(posted):
                assert time.monotonic() < deadline, "not every event was delivered after the disk recovered"
                await asyncio.sleep(0.1)
            print(f"{len(requeue_lines)} requeue lines and {attempts_while_full} transmissions in {QUIET_WINDOW}s full")
        finally:
            await router.stop()
