"""The console channel prints what it is given, under a header naming the channel."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from router.channels.console import ConsoleChannel, ConsoleConfig
from router.core.message import Message


async def test_prints_header_title_and_body(capsys: pytest.CaptureFixture[str]) -> None:
    channel = ConsoleChannel("dev", ConsoleConfig(type="console"))
    outcome = await channel.send(Message("Planet completed", "Alice finished Mars\n"))
    assert outcome.ok
    captured = capsys.readouterr()
    assert captured.out == "=== dev ===\nPlanet completed\nAlice finished Mars\n"
    assert captured.err == ""


async def test_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    channel = ConsoleChannel("errors", ConsoleConfig(type="console", stream="stderr"))
    assert (await channel.send(Message("", "body only"))).ok
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", "=== errors ===\nbody only\n")


def test_unknown_stream_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match="stream"):
        ConsoleConfig(type="console", stream="printer")
