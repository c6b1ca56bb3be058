"""Helpers of the flow-control tests: a channel that records when each message arrived, and
a router config builder. The channel is a plugin of our own, not a stand-in for a remote service."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from router.channels.base import Channel, ChannelConfig
from router.core.message import Message, Outcome
from router.engine.engine import Engine
from router.plugins.manager import Hooks, get_plugin_manager
from router.plugins.registry import Registry
from router.runtime.runtime import build_runtime
from router.state.base import StateStore
from router.support.metrics import Metrics
from router.transports.base import Transport
from tests.builders import event_bytes
from tests.engine_support import Harness, test_registry, write_config


@dataclass(frozen=True)
class Received:
    at: float  # time.monotonic()
    message: Message

    @property
    def event_ids(self) -> list[str]:
        """The events this message stands for: one, a digest's batch, or a summary's folded events."""
        meta = self.message.meta
        if "folded" in meta:
            return list(meta["folded"]["events"])
        if "digest" in meta:
            return list(meta["digest"]["events"])
        return [meta["event_id"]]


class TimedConfig(ChannelConfig):
    script: list[str] = []  # outcomes in turn: sent | retry-after:SECONDS; then sent


class TimedChannel(Channel):
    """Records every message it accepts with its arrival time; shared across engines of a test."""

    type_name = "timed"
    Config = TimedConfig
    received: ClassVar[dict[str, list[Received]]] = {}
    calls: ClassVar[dict[str, int]] = {}

    async def send(self, message: Message) -> Outcome:
        config = self.config
        assert isinstance(config, TimedConfig)
        count = self.calls.get(self.name, 0)
        self.calls[self.name] = count + 1
        step = config.script[count] if count < len(config.script) else "sent"
        if step.startswith("retry-after:"):
            return Outcome.retryable("HTTP 429 Too Many Requests", float(step.split(":", 1)[1]))
        self.received.setdefault(self.name, []).append(Received(time.monotonic(), message))
        return Outcome.sent()

    @classmethod
    def reset(cls) -> None:
        cls.received.clear()
        cls.calls.clear()


def flow_registry() -> Registry:
    registry = test_registry()
    registry.channels["timed"] = TimedChannel
    return registry


def got(channel: str) -> list[Received]:
    return TimedChannel.received.get(channel, [])


def bodies(channel: str) -> list[str]:
    return [r.message.body for r in got(channel)]


def rules_yaml(channels: str, rules: str, extra: str = "") -> str:
    return f"""
version: 1
{extra}
defaults:
  retry: {{attempts: 3, backoff: 50ms, max_backoff: 100ms, jitter: 0}}
channels:
{channels}
rules:
{rules}
"""


def event(type_: str, event_id: str, **data: Any) -> bytes:
    return event_bytes(type_, event_id, data)


TEMPLATES = {
    "one.j2": "{% block title %}{{ event.type }} {{ data.n }}{% endblock %}{% block body %}n={{ data.n }}{% endblock %}",
    "many.j2": (
        "{% block title %}{{ count }} events{% endblock %}"
        "{% block body %}{% for e in events %}{{ e.data.n }}{% if not loop.last %},{% endif %}{% endfor %}{% endblock %}"
    ),
}


async def start_node(
    root: Path,
    rules: str,
    *,
    state: StateStore,
    transport: Transport,
    registry: Registry | None = None,
    prefetch: int = 64,
) -> Harness:
    """One router "process": its own engine, transport connection and state-store connection.

    Several nodes on one queue and one Redis prefix behave as several `router serve` processes.
    """
    runtime = build_runtime(write_config(root, rules, TEMPLATES), registry or flow_registry())
    await state.open()
    await transport.connect()
    metrics = Metrics()
    hooks = Hooks(get_plugin_manager(load_entry_points=False), metrics=metrics)
    engine = Engine(runtime, transport=transport, state=state, hooks=hooks, metrics=metrics)
    await transport.start(engine.handle, prefetch=prefetch)
    await engine.start()
    return Harness(root, runtime, transport, state, engine, metrics)
