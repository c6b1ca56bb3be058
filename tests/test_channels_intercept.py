"""The test interception also works in a subprocess, as integration tests of `router serve` need."""

from __future__ import annotations

import asyncio
import sys

import pytest

from tests.fakes import intercept
from tests.fakes.http_sink import HttpSink, Reply

SCRIPT = """
import requests
r = requests.post("https://discord.com/api/webhooks/1/abc?wait=true", json={"content": "hi"}, timeout=5)
print(r.status_code)
"""


async def test_subprocess_requests_are_redirected() -> None:
    async with HttpSink(Reply(204)) as sink:
        env = intercept.subprocess_env({"discord.com": sink.url})
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SCRIPT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, stderr.decode()
    assert stdout.decode().strip() == "204"
    [request] = sink.requests
    assert (request.original_host, request.path, request.json()) == (
        "discord.com",
        "/api/webhooks/1/abc",
        {"content": "hi"},
    )


def test_spec_round_trip_and_errors() -> None:
    mapping = {"discord.com": "http://127.0.0.1:1234", "hooks.slack.com": "http://127.0.0.1:5678"}
    assert intercept.parse_spec(intercept.format_spec(mapping)) == mapping
    with pytest.raises(ValueError, match="host=http"):
        intercept.parse_spec("discord.com")
