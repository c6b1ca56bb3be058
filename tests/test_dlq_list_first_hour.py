"""`router dlq list` and the failure notification of a schema dead letter agree (issue 16, A5, A9).

A real `router serve` on the embedded queue refuses an event that fails its declared schema;
the shipped delivery_failed.j2 announces it on the console; `router dlq list` shows it with a
header, its time and event id, and the same attempt count as the notification.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import time
from pathlib import Path

import aiohttp
import pytest

from router.engine.dlq import LIST_COLUMNS, format_letters
from router.transports.base import DeadLetter
from tests.engine_support import until
from tests.serve_support import ROUTER, RouterProcess

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent

RULES = """\
version: 1
state: {url: "sqlite:///state.db"}
templates: templates
defaults:
  on_failure: {template: delivery_failed, channels: [console]}
events:
  user.signed_up:
    user: {id: integer, name: string, plan?: string}
channels:
  console: {type: console}
rules:
  - {name: signup, on: user.signed_up, template: user_signed_up, channels: [console]}
"""


async def run_cli(root: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "ROUTER_CONFIG"}
    process = await asyncio.create_subprocess_exec(
        ROUTER, *args, cwd=root, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_schema_dead_letter_listed_with_header_time_event_and_one_attempt(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(RULES)
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    router = await RouterProcess(tmp_path, args=("--no-watch",)).start()
    try:
        bad = {"type": "user.signed_up", "id": "signup-42", "data": {"user": {"id": "not a number"}}}
        before = time.time()
        async with aiohttp.ClientSession() as session, session.post(f"{router.url}/events", json=bad) as response:
            assert response.status == 202

        def printed() -> str:
            return router.out_path.read_text(errors="replace") if router.out_path.exists() else ""

        await until(lambda: "router dlq list" in printed(), timeout=30)
        notification = printed()
        # A5: the event line and the hint are two lines, not "…signup-42See it with…"
        assert re.search(r"Event: user\.signed_up signup-42\n+See it with `router dlq list`", notification), (
            notification
        )
        assert "after 1 attempt: schema." in notification

        listed = await run_cli(tmp_path, "dlq", "list")
        header, line, *rest = listed.splitlines()
        assert not rest
        assert header.split() == ["ID", "DEAD", "AT", "(UTC)", "REASON", "RULE/CHANNEL", "EVENT", "ATTEMPTS", "ERROR"]
        cells = line.split()
        assert cells[3] == "schema" and cells[5] == "signup-42" and cells[6] == "1", line
        shown = time.mktime(time.strptime(f"{cells[1]} {cells[2]}", "%Y-%m-%d %H:%M:%S")) - time.timezone
        assert before - 5 <= shown <= time.time() + 5
        [letter] = json.loads(await run_cli(tmp_path, "dlq", "list", "--json"))
        assert (letter["reason"], letter["event_id"], letter["attempts"]) == ("schema", "signup-42", 1)
    finally:
        await router.stop()


def test_format_letters_aligns_columns_and_keeps_each_letter_on_one_line() -> None:
    letters = [
        DeadLetter("1", "exhausted", "HTTP 503\nService Unavailable", b"", {}, "note", "hook", 5, "evt-1", 0.0),
        DeadLetter("22", "poison", "", b"", {}, attempts=1),
    ]
    header, first, second = format_letters(letters)
    assert header.startswith("ID  DEAD AT (UTC)") and header.endswith(LIST_COLUMNS[-1])
    assert first.startswith("1   1970-01-01 00:00:00  exhausted")
    assert first.endswith("5         HTTP 503 Service Unavailable")
    assert second.startswith("22  -  ") and second.endswith("1         -")
    assert header.index("EVENT") == first.index("evt-1") == second.index("-  ", header.index("EVENT"))


def test_delivery_failed_template_keeps_its_lines_apart_for_an_undecodable_message() -> None:
    from router.plugins.manager import build_registry
    from router.runtime.runtime import build_runtime

    runtime = build_runtime(ROOT / "rules.yaml", build_registry())
    failure = dict.fromkeys(("channel", "channel_type", "rule", "event_id", "event_type", "dead_letter_id"))
    failure.update(reason="poison", error="not JSON", attempts=1)
    context = {"failure": failure, "event": None, "data": {}, "rule": None}
    context["channel"] = {"name": "console", "type": "console", "markdown": False}
    body = runtime.templates.render("delivery_failed", context, channel_type="console").body
    assert body.splitlines()[-2:] == [
        "The message could not be read as an event.",
        "See it with `router dlq list`; send it again with `router dlq replay`.",
    ]
