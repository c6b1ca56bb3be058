"""The built-in notify job: one render per channel, concurrent delivery, render errors isolated."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from router import Message, NoOptions, Outcome, TemplateError
from router.config.models import Rule
from router.jobs.notify import NotifyJob
from tests.builders import make_event

Deliver = Callable[[str, Message], Awaitable[Outcome]]


class Ctx:
    """A JobContext whose render and deliver the test controls."""

    def __init__(self, channels: list[str], *, fail_render: dict[str, Exception] | None = None) -> None:
        self.event = make_event({"n": 1}, type="planet.completed", id="evt-9", source="tests", time=datetime.now(UTC))
        self.rule = Rule.model_validate(
            {"name": "done", "on": "planet.completed", "template": "t", "channels": channels}
        )
        self.options = NoOptions()
        self.state = None
        self.fail_render = fail_render or {}
        self.rendered: list[str] = []
        self.delivered: list[tuple[str, Message]] = []
        self.on_deliver: dict[str, Deliver] = {}

    def render(self, channel: str | None = None, template: str | None = None) -> Message:
        assert channel is not None
        self.rendered.append(channel)
        if channel in self.fail_render:
            raise self.fail_render[channel]
        return Message(title=f"title for {channel}", body="body")

    async def deliver(self, channel: str, message: Message) -> Outcome:
        if channel in self.on_deliver:
            outcome = await self.on_deliver[channel](channel, message)
        else:
            outcome = Outcome.sent()
        self.delivered.append((channel, message))
        return outcome

    async def publish(self, type: str, data: dict[str, Any]) -> str:
        raise AssertionError("notify publishes nothing")


def test_notify_is_the_job_name_and_takes_no_options() -> None:
    assert NotifyJob.name == "notify"
    assert NotifyJob.With is NoOptions


async def test_renders_for_each_channel_and_delivers_each_its_own_message() -> None:
    ctx = Ctx(["discord", "email"])
    await NotifyJob().handle(ctx)
    assert ctx.rendered == ["discord", "email"]
    assert sorted(ctx.delivered) == [
        ("discord", Message(title="title for discord", body="body")),
        ("email", Message(title="title for email", body="body")),
    ]


async def test_a_slow_channel_does_not_hold_up_the_others() -> None:
    ctx = Ctx(["slow", "fast"])
    fast_done = asyncio.Event()

    async def slow(channel: str, message: Message) -> Outcome:
        # Finishes only once "fast" has been delivered: sequential delivery would never get there.
        await fast_done.wait()
        return Outcome.sent()

    async def fast(channel: str, message: Message) -> Outcome:
        fast_done.set()
        return Outcome.sent()

    ctx.on_deliver = {"slow": slow, "fast": fast}
    await asyncio.wait_for(NotifyJob().handle(ctx), timeout=5)
    assert [channel for channel, _ in ctx.delivered] == ["fast", "slow"]


async def test_a_render_error_does_not_stop_other_channels_and_is_raised_after() -> None:
    error = TemplateError("'user' is undefined", template="t.slack.j2", line=3)
    ctx = Ctx(["discord", "slack", "email"], fail_render={"slack": error})

    with pytest.raises(TemplateError) as raised:
        await NotifyJob().handle(ctx)

    assert raised.value is error
    assert sorted(channel for channel, _ in ctx.delivered) == ["discord", "email"]


async def test_an_unexpected_render_failure_becomes_a_template_error_naming_the_channel() -> None:
    ctx = Ctx(["discord", "slack"], fail_render={"slack": KeyError("slack")})
    with pytest.raises(TemplateError, match="rendering for channel 'slack' failed: KeyError") as raised:
        await NotifyJob().handle(ctx)
    assert raised.value.template == "t"
    assert isinstance(raised.value.__cause__, KeyError)
    assert [channel for channel, _ in ctx.delivered] == ["discord"]


async def test_several_render_errors_raise_the_first_and_mention_the_rest() -> None:
    ctx = Ctx(
        ["a", "b", "c"],
        fail_render={"a": TemplateError("first", template="t.j2"), "b": TemplateError("second", template="t.j2")},
    )
    with pytest.raises(TemplateError, match="first") as raised:
        await NotifyJob().handle(ctx)
    assert any("second" in note for note in raised.value.__notes__)
    assert [channel for channel, _ in ctx.delivered] == ["c"]


async def test_a_delivery_that_raises_lets_the_others_finish_then_propagates() -> None:
    ctx = Ctx(["broken", "slow"])
    broken_raised = asyncio.Event()

    async def broken(channel: str, message: Message) -> Outcome:
        broken_raised.set()
        raise ConnectionError("state store unreachable")

    async def slow(channel: str, message: Message) -> Outcome:
        await broken_raised.wait()
        return Outcome.sent()

    ctx.on_deliver = {"broken": broken, "slow": slow}
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(NotifyJob().handle(ctx), timeout=5)
    # The job waited for "slow" to finish instead of abandoning it mid-send.
    assert [channel for channel, _ in ctx.delivered] == ["slow"]


async def test_a_delivery_error_outranks_a_render_error() -> None:
    ctx = Ctx(["bad-template", "broken"], fail_render={"bad-template": TemplateError("x")})

    async def broken(channel: str, message: Message) -> Outcome:
        raise ConnectionError("state store unreachable")

    ctx.on_deliver = {"broken": broken}
    # Raising the infrastructure failure means the event is retried rather than dead-lettered.
    with pytest.raises(ConnectionError):
        await NotifyJob().handle(ctx)
