"""Event hooks (sync, async, failing) and the docs: every hook has a section with a working example."""

from __future__ import annotations

import dataclasses
import inspect
import logging
import re
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from router import Delivery, Event, Message, Outcome, hookimpl
from router.plugins import hookspecs
from router.plugins.manager import (
    HOOK_NAMES,
    Hooks,
    RouterPluginManager,
    build_registry,
    call_before_delivery,
    call_delivery_finished,
    call_event_received,
    get_plugin_manager,
)
from tests import builders

DOCS = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"


def make_event(**data: Any) -> Event:
    return builders.make_event(dict(data), source="tests")


def make_delivery(channel_type: str = "discord", attempt: int = 1) -> Delivery:
    return Delivery(
        event=make_event(),
        rule="planet-completed",
        channel="general",
        channel_type=channel_type,
        message=Message(title="Done", body="Planet done"),
        attempt=attempt,
    )


@pytest.fixture
def pm() -> RouterPluginManager:
    return get_plugin_manager(load_entry_points=False)


# --- event_received ----------------------------------------------------------------------


class AddsRegion:
    @hookimpl
    def event_received(self, event: Event) -> Event:
        return dataclasses.replace(event, data={**event.data, "region": "eu"})


class AsyncAddsTier:
    @hookimpl
    async def event_received(self, event: Event) -> Event:
        # Sees the result of the implementation that ran before it.
        tier = "gold" if event.data.get("region") == "eu" else "free"
        return dataclasses.replace(event, data={**event.data, "tier": tier})


class LeavesAlone:
    def __init__(self) -> None:
        self.seen: list[Event] = []

    @hookimpl
    def event_received(self, event: Event) -> None:
        self.seen.append(event)


class RaisesSync:
    @hookimpl
    def event_received(self, event: Event) -> Event:
        raise ValueError("lookup table missing")


class RaisesAsync:
    @hookimpl
    async def event_received(self, event: Event) -> Event:
        raise ConnectionError("customer API down")


class ReturnsJunk:
    @hookimpl
    def event_received(self, event: Event) -> Any:
        return {"type": "not an event"}


async def test_event_received_chains_sync_and_async_replacements(pm: RouterPluginManager) -> None:
    watcher = LeavesAlone()
    # pluggy calls the plugin registered last first.
    pm.register(watcher, name="watcher")
    pm.register(AsyncAddsTier(), name="tier")
    pm.register(AddsRegion(), name="region")
    original = make_event(user="u-1")

    result = await Hooks(pm).event_received(original)

    assert result.data == {"user": "u-1", "region": "eu", "tier": "gold"}
    assert watcher.seen == [result]  # None left the event as it was
    assert original.data == {"user": "u-1"}


async def test_event_received_skips_implementations_that_raise_and_logs_their_names(
    pm: RouterPluginManager, caplog: pytest.LogCaptureFixture
) -> None:
    pm.register(AddsRegion(), name="region")
    pm.register(RaisesSync(), name="router-broken-sync")
    pm.register(RaisesAsync(), name="router-broken-async")

    with caplog.at_level(logging.ERROR, logger="router.plugins"):
        result = await call_event_received(pm, make_event())

    assert result.data == {"region": "eu"}
    messages = [r.getMessage() for r in caplog.records if r.name == "router.plugins"]
    assert "plugin 'router-broken-sync' raised in event_received; skipped" in messages
    assert "plugin 'router-broken-async' raised in event_received; skipped" in messages
    assert any(r.exc_info and isinstance(r.exc_info[1], ConnectionError) for r in caplog.records)


async def test_event_received_ignores_a_result_that_is_not_an_event(
    pm: RouterPluginManager, caplog: pytest.LogCaptureFixture
) -> None:
    pm.register(ReturnsJunk(), name="junk")
    event = make_event()
    with caplog.at_level(logging.ERROR, logger="router.plugins"):
        assert await call_event_received(pm, event) is event
    assert "plugin 'junk': event_received returned dict" in caplog.text


async def test_tryfirst_runs_before_later_registered_plugins(pm: RouterPluginManager) -> None:
    order: list[str] = []

    class Early:
        @hookimpl(tryfirst=True)
        def event_received(self, event: Event) -> None:
            order.append("early")

    class Late:
        @hookimpl
        def event_received(self, event: Event) -> None:
            order.append("late")

    pm.register(Early(), name="early")
    pm.register(Late(), name="late")
    await Hooks(pm).event_received(make_event())
    assert order == ["early", "late"]


# --- before_delivery ---------------------------------------------------------------------


class Footer:
    @hookimpl
    async def before_delivery(self, delivery: Delivery) -> None:
        delivery.message = dataclasses.replace(delivery.message, body=delivery.message.body + "\n-- router")


class MarksRetries:
    @hookimpl
    def before_delivery(self, delivery: Delivery) -> None:
        if delivery.attempt > 1:
            delivery.message = dataclasses.replace(delivery.message, title=f"{delivery.message.title} (retry)")


class BreaksMessage:
    @hookimpl
    def before_delivery(self, delivery: Delivery) -> None:
        delivery.message = "plain text"  # type: ignore[assignment]


class RaisesBeforeDelivery:
    @hookimpl
    async def before_delivery(self, delivery: Delivery) -> None:
        raise RuntimeError("boom")


async def test_before_delivery_can_replace_the_message(pm: RouterPluginManager) -> None:
    pm.register(Footer(), name="footer")
    pm.register(MarksRetries(), name="retries")
    delivery = make_delivery(attempt=2)
    await call_before_delivery(pm, delivery)
    assert delivery.message == Message(title="Done (retry)", body="Planet done\n-- router")


async def test_before_delivery_undoes_a_non_message_and_survives_a_raise(
    pm: RouterPluginManager, caplog: pytest.LogCaptureFixture
) -> None:
    pm.register(Footer(), name="footer")  # runs last
    pm.register(RaisesBeforeDelivery(), name="router-raiser")
    pm.register(BreaksMessage(), name="router-breaker")  # runs first
    delivery = make_delivery()

    with caplog.at_level(logging.ERROR, logger="router.plugins"):
        await Hooks(pm).before_delivery(delivery)

    assert delivery.message == Message(title="Done", body="Planet done\n-- router")
    assert "plugin 'router-breaker': before_delivery set delivery.message to str" in caplog.text
    assert "plugin 'router-raiser' raised in before_delivery" in caplog.text


# --- delivery_finished -------------------------------------------------------------------


async def test_delivery_finished_sees_every_outcome_even_after_a_failing_plugin(
    pm: RouterPluginManager, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[tuple[str, str]] = []

    class Recorder:
        @hookimpl
        async def delivery_finished(self, delivery: Delivery, outcome: Outcome) -> None:
            seen.append((delivery.key, outcome.status))

    class OnlyOutcome:  # an implementation may take fewer arguments than the hook offers
        @hookimpl
        def delivery_finished(self, outcome: Outcome) -> None:
            seen.append(("outcome-only", outcome.reason))

    class Raises:
        @hookimpl
        def delivery_finished(self, delivery: Delivery, outcome: Outcome) -> None:
            raise KeyError("metrics")

    pm.register(Recorder(), name="recorder")
    pm.register(OnlyOutcome(), name="outcome-only")
    pm.register(Raises(), name="router-raiser")

    delivery = make_delivery()
    with caplog.at_level(logging.ERROR, logger="router.plugins"):
        await call_delivery_finished(pm, delivery, Outcome.retryable("HTTP 503", retry_after=3))

    # The delivery key starts with the event key: its source and id (issue 15, item 14).
    assert seen == [("outcome-only", "HTTP 503"), ('["tests","evt-1"]:planet-completed:general', "retry")]
    assert "plugin 'router-raiser' raised in delivery_finished" in caplog.text


async def test_failing_implementations_are_counted_per_plugin_in_the_metrics(pm: RouterPluginManager) -> None:
    from router.support.metrics import Metrics

    metrics = Metrics()
    pm.register(RaisesAsync(), name="router-flaky")
    pm.register(ReturnsJunk(), name="router-junk")
    pm.register(BreaksMessage(), name="router-breaker")
    pm.register(AddsRegion(), name="region")
    hooks = Hooks(pm, metrics=metrics)

    await hooks.event_received(make_event())
    await hooks.event_received(make_event())
    await hooks.before_delivery(make_delivery())

    def errors(plugin: str) -> float | None:
        return metrics.registry.get_sample_value("router_plugin_hook_errors_total", {"plugin": plugin})

    assert errors("router-flaky") == 2
    assert errors("router-junk") == 2
    assert errors("router-breaker") == 1
    assert errors("region") is None


# --- the cached fast path ----------------------------------------------------------------


async def test_hooks_report_no_implementations_with_only_builtins(pm: RouterPluginManager) -> None:
    hooks = Hooks(pm)
    assert not hooks.has_event_received
    assert not hooks.has_before_delivery
    assert not hooks.has_delivery_finished
    event = make_event()
    assert await hooks.event_received(event) is event


async def test_hooks_notice_plugins_registered_after_they_were_built(pm: RouterPluginManager) -> None:
    hooks = Hooks(pm)
    assert not hooks.has_event_received
    region = AddsRegion()
    pm.register(region, name="region")
    assert hooks.has_event_received
    assert (await hooks.event_received(make_event())).data == {"region": "eu"}
    pm.unregister(region)
    assert not hooks.has_event_received


async def test_hook_wrappers_are_ignored_for_event_hooks(
    pm: RouterPluginManager, caplog: pytest.LogCaptureFixture
) -> None:
    class Wrapper:
        @hookimpl(wrapper=True)
        def event_received(self, event: Event) -> Any:
            return (yield)

    pm.register(Wrapper(), name="wrapper")
    with caplog.at_level(logging.WARNING, logger="router.plugins"):
        hooks = Hooks(pm)
    assert not hooks.has_event_received
    assert "plugin 'wrapper': event_received as a hook wrapper is not supported" in caplog.text


# --- the docs: a section per hook, with an example that works ----------------------------


def doc_sections() -> dict[str, tuple[str, str]]:
    """Hook name -> (argument list in the heading, section text)."""
    text = DOCS.read_text()
    sections: dict[str, tuple[str, str]] = {}
    parts = re.split(r"^## ", text, flags=re.MULTILINE)
    for part in parts[1:]:
        heading, _, body = part.partition("\n")
        match = re.fullmatch(r"`(\w+)\(([^)]*)\)`", heading.strip())
        if match:
            sections[match.group(1)] = (match.group(2), body)
    return sections


def example_module(hook: str, monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """Execute the first python block of the hook's section as a module."""
    _, body = doc_sections()[hook]
    blocks = re.findall(r"```python\n(.*?)```", body, flags=re.DOTALL)
    assert blocks, f"docs/plugins.md section `{hook}` has no python example"
    module = types.ModuleType(f"docs_example_{hook}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(blocks[0], f"docs/plugins.md ({hook})", "exec"), module.__dict__)
    return module


def test_hook_names_are_the_hookspecs() -> None:
    assert set(HOOK_NAMES) == {
        "register_channels",
        "register_jobs",
        "register_template_filters",
        "event_received",
        "before_delivery",
        "delivery_finished",
    }


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_every_hook_has_a_docs_section_titled_with_its_signature(hook: str) -> None:
    sections = doc_sections()
    assert hook in sections, f"docs/plugins.md needs a section '## `{hook}(...)`'"
    arguments = [a.strip() for a in sections[hook][0].split(",") if a.strip()]
    assert arguments == list(inspect.signature(getattr(hookspecs, hook)).parameters)


def test_every_python_block_in_the_docs_compiles() -> None:
    for number, block in enumerate(re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)):
        compile(block, f"docs/plugins.md block {number}", "exec")


def test_docs_example_register_channels(pm: RouterPluginManager, monkeypatch: pytest.MonkeyPatch) -> None:
    module = example_module("register_channels", monkeypatch)
    pm.register(module, name="router-mattermost")
    registry = build_registry(pm)
    assert registry.errors == []
    assert registry.channels["mattermost"] is module.MattermostChannel
    config = module.MattermostConfig.model_validate({"type": "mattermost", "url": "https://chat.example/hooks/s3cret"})
    assert "s3cret" not in repr(config)


async def test_docs_example_register_jobs(pm: RouterPluginManager, monkeypatch: pytest.MonkeyPatch) -> None:
    module = example_module("register_jobs", monkeypatch)
    pm.register(module, name="router-pager")
    registry = build_registry(pm)
    assert registry.errors == []
    job_class = registry.jobs["pager.escalate"]
    delivered: list[str] = []
    published: list[tuple[str, dict[str, Any]]] = []

    class Ctx:
        event = make_event()
        rule = types.SimpleNamespace(name="outage")
        options = job_class.With.model_validate({"primary": "slack", "fallback": "email"})
        state = None

        def render(self, channel: str | None = None, template: str | None = None) -> Message:
            return Message(title="Outage", body=f"for {channel}")

        async def deliver(self, channel: str, message: Message) -> Outcome:
            delivered.append(channel)
            return Outcome.permanent("HTTP 404") if channel == "slack" else Outcome.sent()

        async def publish(self, type: str, data: dict[str, Any]) -> str:
            published.append((type, data))
            return "evt-2"

    await job_class().handle(Ctx())
    assert delivered == ["slack", "email"]
    assert published == [("pager.escalated", {"event_id": "evt-1", "rule": "outage"})]


def test_docs_example_register_template_filters(pm: RouterPluginManager, monkeypatch: pytest.MonkeyPatch) -> None:
    pm.register(example_module("register_template_filters", monkeypatch), name="router-humanize")
    registry = build_registry(pm)
    assert registry.errors == []  # the example's names must not clash with the built-in filters
    filters = registry.filters
    assert filters["stopwatch"](3720) == "1h 02m"
    assert filters["stopwatch"](75) == "1m 15s"
    assert [filters["ordinal"](n) for n in (1, 2, 3, 11, 22)] == ["1st", "2nd", "3rd", "11th", "22nd"]


async def test_docs_example_event_received(pm: RouterPluginManager, monkeypatch: pytest.MonkeyPatch) -> None:
    pm.register(example_module("event_received", monkeypatch), name="router-tiers")
    enriched = await Hooks(pm).event_received(make_event(user={"id": "u-1"}))
    assert enriched.data["user"] == {"id": "u-1", "tier": "gold"}


async def test_docs_example_before_delivery(pm: RouterPluginManager, monkeypatch: pytest.MonkeyPatch) -> None:
    pm.register(example_module("before_delivery", monkeypatch), name="router-footer")
    delivery = make_delivery(channel_type="email", attempt=3)
    await Hooks(pm).before_delivery(delivery)
    assert delivery.message.title == "Done (retry 2)"
    assert delivery.message.body.endswith("-- sent by the notification router")


async def test_docs_example_delivery_finished(
    pm: RouterPluginManager, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    module = example_module("delivery_finished", monkeypatch)
    pm.register(module, name="router-failwatch")
    with caplog.at_level(logging.WARNING, logger="router_failwatch"):
        await Hooks(pm).delivery_finished(make_delivery(), Outcome.permanent("HTTP 401"))
    assert module.OUTCOMES[("general", "failed")] == 1
    assert "failed for good after 1 attempt(s): HTTP 401" in caplog.text
